//! `[[keys]]`: names for known API keys, so `key_id` can say `team-search` instead of a
//! fingerprint. Only hashes are kept; a key read from the environment is hashed at start.

use sha2::{Digest, Sha256};

use super::file::KeyFile;
use super::{ConfigError, EnvSource};

pub(super) fn build_all(
    entries: &[KeyFile],
    env: EnvSource<'_>,
) -> Result<Vec<([u8; 32], String)>, ConfigError> {
    let mut keys = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("keys[{i}]");
        let name = entry
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ConfigError::invalid(format!("{at}.name"), "is required"))?;
        let hash = match (&entry.sha256, &entry.env) {
            (Some(hex), None) => parse_hex(hex.trim()).ok_or_else(|| {
                ConfigError::invalid(format!("{at}.sha256"), "must be 64 hexadecimal digits")
            })?,
            (None, Some(var)) => {
                let key = env(var)
                    .map(|k| k.trim().to_owned())
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            format!("{at}.env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?;
                Sha256::digest(key.as_bytes()).into()
            }
            _ => {
                return Err(ConfigError::invalid(
                    &at,
                    "give exactly one of sha256 or env",
                ));
            }
        };
        keys.push((hash, name.to_owned()));
    }
    Ok(keys)
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_hash_or_env() {
        let entries = vec![
            KeyFile {
                name: Some("search".into()),
                sha256: Some("ab".repeat(32)),
                env: None,
            },
            KeyFile {
                name: Some("batch".into()),
                sha256: None,
                env: Some("BATCH_KEY".into()),
            },
        ];
        let keys = build_all(&entries, &|v| {
            (v == "BATCH_KEY").then(|| "sk-batch".to_owned())
        })
        .expect("valid");
        assert_eq!(keys[0], ([0xab; 32], "search".to_owned()));
        assert_eq!(keys[1].0, <[u8; 32]>::from(Sha256::digest(b"sk-batch")));
        let bad = |k: KeyFile| build_all(&[k], &|_| None).expect_err("refused").to_string();
        assert_eq!(
            bad(KeyFile {
                name: Some("x".into()),
                sha256: Some("zz".into()),
                env: None
            }),
            "keys[0].sha256: must be 64 hexadecimal digits"
        );
        assert_eq!(
            bad(KeyFile {
                name: None,
                sha256: None,
                env: None
            }),
            "keys[0].name: is required"
        );
        assert_eq!(
            bad(KeyFile {
                name: Some("x".into()),
                sha256: None,
                env: Some("NOPE".into())
            }),
            "keys[0].env: environment variable NOPE is not set"
        );
    }
}
