//! The few strings that nearly every request repeats (the model it names, the model its answer
//! names, its key's fingerprint), shared from a small cache per thread instead of allocated for
//! each request. The record and the live views hold them as `Arc<str>`: made anew, each was an
//! allocation on the request's path and a free on the recorder's thread.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

/// Strings kept per cache. A proxy sees a handful of models and keys at a time; a client that
/// names a new model in every request only turns the cache over.
const SLOTS: usize = 8;
/// Longer strings are made anew each time, never kept: a model name is the client's to choose.
const MAX_LEN: usize = 128;

/// The strings seen last, replaced in turn.
#[derive(Default)]
struct Recent {
    slots: [Option<Arc<str>>; SLOTS],
    next: usize,
}

impl Recent {
    fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(kept) = self.slots.iter().flatten().find(|kept| ***kept == *text) {
            return Arc::clone(kept);
        }
        let made = Arc::<str>::from(text);
        if text.len() <= MAX_LEN {
            self.slots[self.next] = Some(Arc::clone(&made));
            self.next = (self.next + 1) % SLOTS;
        }
        made
    }
}

thread_local! {
    static MODELS: RefCell<Recent> = RefCell::default();
    static KEY_IDS: RefCell<Recent> = RefCell::default();
}

/// `model` as an `Arc<str>`, shared with the requests and answers before it that named the
/// same one.
pub fn model(model: &str) -> Arc<str> {
    share(&MODELS, model)
}

/// A key fingerprint as an `Arc<str>`, shared likewise.
pub fn key_id(fingerprint: &str) -> Arc<str> {
    share(&KEY_IDS, fingerprint)
}

/// A thread's caches are gone only while the thread ends: its strings are then made anew.
fn share(cache: &'static LocalKey<RefCell<Recent>>, text: &str) -> Arc<str> {
    cache
        .try_with(|recent| recent.borrow_mut().share(text))
        .unwrap_or_else(|_| Arc::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_seen_lately_is_shared_and_the_oldest_makes_room() {
        let mut recent = Recent::default();
        let first = recent.share("gpt-4o-mini");
        assert!(Arc::ptr_eq(&first, &recent.share("gpt-4o-mini")));
        assert_eq!(&*recent.share("gpt-4o"), "gpt-4o");
        // Eight more names push the first one out: it is made anew, equal but not shared.
        for i in 0..SLOTS {
            recent.share(&format!("model-{i}"));
        }
        let again = recent.share("gpt-4o-mini");
        assert_eq!(again, first);
        assert!(!Arc::ptr_eq(&first, &again));
        // A long name is never kept.
        let long = "m".repeat(MAX_LEN + 1);
        let made = recent.share(&long);
        assert!(!Arc::ptr_eq(&made, &recent.share(&long)));
        assert!(
            recent
                .slots
                .iter()
                .flatten()
                .all(|kept| kept.len() <= MAX_LEN)
        );
    }

    #[test]
    fn the_thread_caches_share_what_they_keep() {
        assert!(Arc::ptr_eq(
            &model("claude-sonnet-4-5"),
            &model("claude-sonnet-4-5")
        ));
        assert!(Arc::ptr_eq(
            &key_id("key_0123456789ab"),
            &key_id("key_0123456789ab")
        ));
        assert!(!Arc::ptr_eq(
            &model("key_0123456789ab"),
            &key_id("key_0123456789ab")
        ));
    }
}
