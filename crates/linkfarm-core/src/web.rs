//! The `web:` section of the config file (SPEC §13), read for `linkfarm web` only.
//!
//! The main parse ([`crate::parse_config`]) checks the section's keys and types along with the
//! rest of the file; [`parse_web`] then reads the same text again for this section alone and
//! validates its values into a [`Web`], with the line and column of every problem. Like the rest
//! of the core it never touches the disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::config::{ConfigError, Diagnostic};
use crate::paths::absolutize;
use crate::time::parse_duration;

/// `web:` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeb {
    listen: Option<Spanned<String>>,
    users_file: Option<Spanned<String>>,
    inboxes: Option<Vec<Spanned<String>>>,
    expire_after: Option<Spanned<String>>,
    reserve: Option<Spanned<Size>>,
    max_chunk: Option<Spanned<Size>>,
    max_uploads_per_user: Option<Spanned<u32>>,
    trusted_user_header: Option<Spanned<String>>,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
}

/// Only the `web:` key; the other keys were checked by the main parse and are skipped here.
#[derive(Deserialize)]
struct WebOnly {
    #[serde(default)]
    web: Option<RawWeb>,
}

/// A size as written: plain bytes, or a string with `KiB`, `MiB`, `GiB`, `TiB`.
#[derive(Debug, Clone)]
pub(crate) enum Size {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as 5GiB, or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `123`, `64KiB`, `5GiB`, `1TiB` (also `KB`-less forms with a space: `5 GiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("`{text}` is not a size"));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("`{text}`: number too large"))?;
    let mult: u64 = match t[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{text}`: too large"))
}

/// TLS files for rustls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The validated `web:` section, with SPEC §13's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    /// Address to bind (default 127.0.0.1:8470).
    pub listen: SocketAddr,
    /// The argon2 users file (default /etc/linkfarm/web-users).
    pub users_file: PathBuf,
    /// The inboxes served by name; `None` serves all.
    pub inboxes: Option<Vec<String>>,
    /// An upload untouched this long expires and its part file is removed (default 24h).
    pub expire_after: Duration,
    /// Free bytes kept on an inbox's filesystem (default 5GiB).
    pub reserve: u64,
    /// Largest request body of one PATCH (default 64MiB).
    pub max_chunk: u64,
    /// Uploads created and not finished, per user (default 4).
    pub max_uploads_per_user: u32,
    /// A header naming the user, set by a trusted reverse proxy (default none).
    pub trusted_user_header: Option<String>,
    /// TLS through rustls when set.
    pub tls: Option<Tls>,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            users_file: PathBuf::from("/etc/linkfarm/web-users"),
            inboxes: None,
            expire_after: Duration::from_secs(24 * 3600),
            reserve: 5 << 30,
            max_chunk: 64 << 20,
            max_uploads_per_user: 4,
            trusted_user_header: None,
            tls: None,
        }
    }
}

/// Reads and validates the `web:` section of the config `text` read from `file` (absolute).
/// A file without the section gets the defaults.
pub fn parse_web(text: &str, file: &Path) -> Result<Web, ConfigError> {
    let raw: WebOnly = serde_saphyr::from_str(text)
        .map_err(|e| ConfigError::whole_file(file, format!("cannot read `web:`: {e}"), "fix the YAML"))?;
    let base = file.parent().unwrap_or(Path::new("/"));
    let mut diags = Vec::new();
    let web = validate(raw.web.unwrap_or_default(), base, &mut diags);
    if diags.is_empty() {
        Ok(web)
    } else {
        Err(ConfigError {
            file: file.to_owned(),
            diagnostics: diags,
        })
    }
}

fn at(d: &mut Vec<Diagnostic>, loc: Location, message: String, hint: &str) {
    d.push(Diagnostic {
        line: loc.line(),
        column: loc.column(),
        message,
        hint: hint.into(),
    });
}

fn size(v: &Spanned<Size>, key: &str, d: &mut Vec<Diagnostic>) -> Option<u64> {
    let r = match &v.value {
        Size::Bytes(n) => Ok(*n),
        Size::Text(t) => parse_size(t),
    };
    r.map_err(|e| at(d, v.referenced, format!("`web.{key}`: {e}"), "write e.g. 5GiB"))
        .ok()
}

fn validate(raw: RawWeb, base: &Path, d: &mut Vec<Diagnostic>) -> Web {
    let mut w = Web::default();
    if let Some(v) = raw.listen {
        match v.value.parse() {
            Ok(a) => w.listen = a,
            Err(_) => at(
                d,
                v.referenced,
                format!("`web.listen`: `{}` is not an address:port", v.value),
                "write e.g. 127.0.0.1:8470 or [::1]:8470",
            ),
        }
    }
    if let Some(v) = raw.users_file {
        if v.value.is_empty() || v.value.contains('\0') {
            at(
                d,
                v.referenced,
                "`web.users_file` is not a path".into(),
                "write e.g. /etc/linkfarm/web-users",
            );
        } else {
            w.users_file = absolutize(base, Path::new(&v.value));
        }
    }
    if let Some(list) = raw.inboxes {
        w.inboxes = Some(list.into_iter().map(|s| s.value).collect());
    }
    if let Some(v) = raw.expire_after {
        match parse_duration(&v.value) {
            Ok(x) if !x.is_zero() => w.expire_after = x,
            Ok(_) => at(
                d,
                v.referenced,
                "`web.expire_after` must be greater than 0".into(),
                "write e.g. 24h",
            ),
            Err(e) => at(
                d,
                v.referenced,
                format!("`web.expire_after`: {e}"),
                "write e.g. 24h",
            ),
        }
    }
    if let Some(x) = raw.reserve.as_ref().and_then(|v| size(v, "reserve", d)) {
        w.reserve = x;
    }
    if let Some(v) = &raw.max_chunk {
        match size(v, "max_chunk", d) {
            Some(0) => at(
                d,
                v.referenced,
                "`web.max_chunk` must be greater than 0".into(),
                "write e.g. 64MiB",
            ),
            Some(x) => w.max_chunk = x,
            None => {}
        }
    }
    if let Some(v) = raw.max_uploads_per_user {
        if v.value == 0 {
            at(
                d,
                v.referenced,
                "`web.max_uploads_per_user` must be at least 1".into(),
                "write e.g. 4",
            );
        } else {
            w.max_uploads_per_user = v.value;
        }
    }
    if let Some(v) = raw.trusted_user_header {
        let ok = !v.value.is_empty()
            && v.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            w.trusted_user_header = Some(v.value);
        } else {
            at(
                d,
                v.referenced,
                format!(
                    "`web.trusted_user_header`: `{}` is not a header name",
                    v.value.escape_debug()
                ),
                "write e.g. X-Remote-User",
            );
        }
    }
    if let Some(t) = raw.tls {
        let cert = absolutize(base, Path::new(&t.cert.value));
        let key = absolutize(base, Path::new(&t.key.value));
        if t.cert.value.is_empty() || t.key.value.is_empty() {
            at(
                d,
                t.cert.referenced,
                "`web.tls` needs `cert` and `key` files".into(),
                "write the paths of the PEM files",
            );
        } else {
            w.tls = Some(Tls { cert, key });
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Web, ConfigError> {
        parse_web(text, Path::new("/etc/linkfarm/linkfarm.yaml"))
    }

    #[test]
    fn defaults_without_the_section() {
        assert_eq!(parse("version: 1\nfarms: []\n").unwrap(), Web::default());
    }

    #[test]
    fn every_key() {
        let w = parse(
            "web:\n  listen: 0.0.0.0:9000\n  users_file: users\n  inboxes: [a]\n  expire_after: 1h\n  reserve: 1GiB\n  max_chunk: 8MiB\n  max_uploads_per_user: 2\n  trusted_user_header: X-Remote-User\n  tls: { cert: c.pem, key: k.pem }\n",
        )
        .unwrap();
        assert_eq!(w.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(w.users_file, PathBuf::from("/etc/linkfarm/users"));
        assert_eq!(w.inboxes, Some(vec!["a".to_string()]));
        assert_eq!(w.expire_after, Duration::from_secs(3600));
        assert_eq!(
            (w.reserve, w.max_chunk, w.max_uploads_per_user),
            (1 << 30, 8 << 20, 2)
        );
        assert_eq!(w.trusted_user_header.as_deref(), Some("X-Remote-User"));
        assert_eq!(w.tls.unwrap().key, PathBuf::from("/etc/linkfarm/k.pem"));
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = parse("version: 1\nweb:\n  listen: localhost\n  reserve: 5GB\n  max_uploads_per_user: 0\n")
            .unwrap_err();
        let lines: Vec<u64> = e.diagnostics.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![3, 4, 5], "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("5GB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
