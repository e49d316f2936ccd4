//! Does the server speak what the URL says? An `https://` URL pointed at a plain-HTTP server
//! (or an `http://` URL at a TLS server) fails every attempt the same way, so retrying it
//! until the deadline only hides a configuration error. After the first broken exchange of a
//! pass, the uploader sends the server a TLS ClientHello on a fresh connection and reads the
//! first bytes of the answer: a TLS record (a ServerHello or an alert, `0x16`/`0x15` then
//! version `0x03`) means the server speaks TLS, `HTTP/` means plain HTTP (an HTTP server
//! answers the binary hello with `400 Bad Request`); anything else (silence, a reset) decides
//! nothing and the attempt is retried as usual.
//!
//! The hello is fixed (no random bytes, no `\n`): it asks for TLS 1.2 with the usual ECDHE
//! suites and is never completed, so no key material matters. Whether the server accepts it
//! or sends an alert, its first record tells.
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// What the server answered to a TLS ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// A TLS record: the server speaks TLS.
    Tls,
    /// `HTTP/...`: a plain-HTTP server.
    PlainHttp,
    /// No usable answer (timeout, reset, connection refused, other bytes).
    Unknown,
}

/// The host and port of `url` (`http://` or `https://`), as written (userinfo dropped),
/// with the port the scheme implies when none is given; and whether it is https.
pub fn authority(url: &str) -> Option<(String, u16, bool)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit_once('@').map_or(auth, |(_, a)| a);
    let default = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        (h.to_owned(), port)
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (auth.to_owned(), default),
        }
    };
    (!host.is_empty()).then_some((host, port, https))
}

/// `host:port` as people write it (`[::1]:8780` for IPv6).
fn show(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A TLS 1.2 ClientHello in one record (see the module docs).
pub fn client_hello() -> Vec<u8> {
    let suites: [u16; 9] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
    ];
    let sigalgs: [u16; 8] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let mut ext = Vec::new();
    // signature_algorithms
    ext.extend_from_slice(&[0x00, 0x0d]);
    ext.extend_from_slice(&u16_be(2 + 2 * sigalgs.len()));
    ext.extend_from_slice(&u16_be(2 * sigalgs.len()));
    for s in sigalgs {
        ext.extend_from_slice(&be16(s));
    }
    // ec_point_formats: uncompressed
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // extended_master_secret, renegotiation_info (empty)
    ext.extend_from_slice(&[0x00, 0x17, 0x00, 0x00, 0xff, 0x01, 0x00, 0x01, 0x00]);

    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&u16_be(2 * suites.len()));
    for s in suites {
        body.extend_from_slice(&be16(s));
    }
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&u16_be(ext.len()));
    body.extend_from_slice(&ext);

    let mut hs = vec![0x01];
    hs.extend_from_slice(&u24_be(body.len()));
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16_be(hs.len()));
    rec.extend_from_slice(&hs);
    rec
}

/// TLS integers are big-endian (RFC 8446 section 3.3), unlike seglog's own formats.
fn be16(n: u16) -> [u8; 2] {
    [(n >> 8) as u8, n as u8]
}

fn u16_be(n: usize) -> [u8; 2] {
    be16(u16::try_from(n).unwrap_or(u16::MAX))
}

fn u24_be(n: usize) -> [u8; 3] {
    let n = u32::try_from(n).unwrap_or(0);
    [(n >> 16) as u8, (n >> 8) as u8, n as u8]
}

/// Classifies the first bytes a server sent back.
pub fn classify(answer: &[u8]) -> Speaks {
    match answer {
        [0x15 | 0x16, 0x03, ..] => Speaks::Tls,
        a if a.starts_with(b"HTTP/") => Speaks::PlainHttp,
        _ => Speaks::Unknown,
    }
}

/// Sends the hello to `host:port` and classifies the answer, waiting at most `timeout` for
/// the connection and again for the answer.
pub fn probe(host: &str, port: u16, timeout: Duration) -> Speaks {
    let timeout = timeout.max(Duration::from_millis(10));
    let Some(addr) = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return Speaks::Unknown;
    };
    let Ok(mut c) = TcpStream::connect_timeout(&addr, timeout) else {
        return Speaks::Unknown;
    };
    if c.set_read_timeout(Some(timeout)).is_err()
        || c.set_write_timeout(Some(timeout)).is_err()
        || c.write_all(&client_hello()).is_err()
    {
        return Speaks::Unknown;
    }
    let mut answer = Vec::with_capacity(8);
    let mut buf = [0u8; 8];
    while answer.len() < 5 {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    classify(&answer)
}

/// The configuration error when the server at `url`'s address does not speak its scheme
/// (see the module docs), `None` when it does or the probe cannot tell.
pub fn mismatch(url: &str, timeout: Duration) -> Option<String> {
    let (host, port, https) = authority(url)?;
    let at = show(&host, port);
    match (https, probe(&host, port, timeout)) {
        (true, Speaks::PlainHttp) => Some(format!(
            "the server at {at} answered plain HTTP to a TLS handshake: use http:// or \
             enable TLS on the server"
        )),
        (false, Speaks::Tls) => Some(format!(
            "the server at {at} answered a TLS handshake: it speaks TLS, not plain HTTP; \
             use https:// or disable TLS on the server"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_are_read_as_written() {
        assert_eq!(
            authority("https://127.0.0.1:8780/x"),
            Some(("127.0.0.1".into(), 8780, true))
        );
        assert_eq!(
            authority("http://user:pw@example.com/v1"),
            Some(("example.com".into(), 80, false))
        );
        assert_eq!(authority("https://[::1]:9/"), Some(("::1".into(), 9, true)));
        assert_eq!(authority("https://h"), Some(("h".into(), 443, true)));
        assert_eq!(authority("ftp://h"), None);
        assert_eq!(authority("http://h:port/"), None);
        assert_eq!(show("::1", 9), "[::1]:9");
    }

    #[test]
    fn the_hello_is_one_well_formed_record_without_a_newline() {
        let h = client_hello();
        assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
        let len = usize::from(h[3]) << 8 | usize::from(h[4]);
        assert_eq!(len, h.len() - 5);
        let hs_len = usize::from(h[6]) << 16 | usize::from(h[7]) << 8 | usize::from(h[8]);
        assert_eq!((h[5], hs_len), (0x01, len - 4));
        // A line-based test server must never see a complete line in it.
        assert!(!h.contains(&b'\n'), "{h:02x?}");
    }

    #[test]
    fn answers_are_classified_by_their_first_bytes() {
        assert_eq!(classify(&[0x16, 0x03, 0x03, 0x00, 0x5d]), Speaks::Tls);
        assert_eq!(classify(&[0x15, 0x03, 0x03, 0x00, 0x02]), Speaks::Tls);
        assert_eq!(classify(b"HTTP/1.1 400 Bad Request"), Speaks::PlainHttp);
        assert_eq!(classify(b""), Speaks::Unknown);
        assert_eq!(classify(b"SSH-2.0"), Speaks::Unknown);
    }

    /// A plain-HTTP server answers the hello with 400; a TLS server with a TLS record; a
    /// closed port tells nothing.
    #[test]
    fn a_probe_tells_plain_http_from_tls() {
        use std::net::TcpListener;
        let answer_with = |bytes: &'static [u8]| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            std::thread::spawn(move || {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = c.read(&mut buf);
                let _ = c.write_all(bytes);
            });
            port
        };
        let t = Duration::from_secs(5);
        let p = answer_with(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(probe("127.0.0.1", p, t), Speaks::PlainHttp);
        let p = answer_with(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        assert_eq!(probe("127.0.0.1", p, t), Speaks::Tls);
        let p = answer_with(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        let m = mismatch(&format!("http://127.0.0.1:{p}/"), t).unwrap();
        assert!(m.contains(&format!("127.0.0.1:{p}")), "{m}");
        assert!(m.contains("use https://"), "{m}");
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = closed.local_addr().unwrap().port();
        drop(closed);
        assert_eq!(probe("127.0.0.1", p, t), Speaks::Unknown);
        assert_eq!(mismatch(&format!("https://127.0.0.1:{p}/"), t), None);
    }
}
