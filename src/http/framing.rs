//! HTTP/1.1 message framing over any byte stream: request head writing, response head
//! parsing (httparse, a well-kept sans-IO parser) and body framing per RFC 9112 §6.3
//! (no body for 1xx/204/304, chunked, Content-Length, or read until the server closes).

use smol::Timer;
use std::io;
use std::time::Duration;

/// Largest response head we accept; 2030.5 heads are a few hundred bytes.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body we accept; the biggest 2030.5 list pages are tens of KiB.
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const MAX_HEADERS: usize = 96;
/// Read-buffer capacity kept between responses: a large body grows the buffer up to
/// `MAX_BODY_BYTES` while it is read, and the spare capacity goes back afterwards, so a
/// kept-alive connection holds at most this much once it is idle.
pub(crate) const IDLE_BUFFER_BYTES: usize = 16 * 1024;

/// A byte stream the framing reads from and writes to (TCP, TLS, or memory in tests).
pub(crate) trait ByteIo {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
}

/// Why a response could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// No byte arrived within the read timeout.
    Timeout(Duration),
    /// The server closed the connection; `received` bytes of this response had arrived.
    Closed {
        received: usize,
        what: &'static str,
    },
    Io(io::Error),
    Malformed(String),
}

/// A parsed response before status handling.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub http_minor: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The connection cannot be used again (HTTP/1.0, `Connection: close`, read-to-close).
    pub must_close: bool,
}

/// A stream with a read buffer and a per-read timeout.
pub(crate) struct BufConn<T> {
    pub io: T,
    /// Bytes received and not yet claimed by a response: at most `MAX_HEAD_BYTES` +
    /// `MAX_BODY_BYTES` (plus one read) during a response, capacity trimmed back to
    /// `IDLE_BUFFER_BYTES` after it.
    buf: Vec<u8>,
    pub read_timeout: Duration,
    /// Bytes of the current response received so far (for "closed mid-response").
    received: usize,
}

impl<T: ByteIo> BufConn<T> {
    pub fn new(io: T, read_timeout: Duration) -> Self {
        BufConn {
            io,
            buf: Vec::with_capacity(8192),
            read_timeout,
            received: 0,
        }
    }

    /// Bytes the server sent that no response has claimed yet.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }

    async fn fill(&mut self) -> Result<usize, FrameError> {
        let mut chunk = [0u8; 8192];
        let timeout = self.read_timeout;
        let n = smol::future::or(async { self.io.read(&mut chunk).await.map(Some) }, async {
            Timer::after(timeout).await;
            Ok(None)
        })
        .await
        .map_err(FrameError::Io)?
        .ok_or(FrameError::Timeout(timeout))?;
        self.buf.extend_from_slice(&chunk[..n]);
        self.received += n;
        Ok(n)
    }

    async fn fill_or_closed(&mut self, what: &'static str) -> Result<(), FrameError> {
        if self.fill().await? == 0 {
            return Err(FrameError::Closed {
                received: self.received,
                what,
            });
        }
        Ok(())
    }

    pub async fn write_request(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        // One write when small: a TLS record per request instead of two.
        if body.len() <= 16 * 1024 {
            let mut all = Vec::with_capacity(head.len() + body.len());
            all.extend_from_slice(head);
            all.extend_from_slice(body);
            self.io.write_all(&all).await
        } else {
            self.io.write_all(head).await?;
            self.io.write_all(body).await
        }
    }

    /// Reads one final response (interim 1xx responses are skipped).
    pub async fn read_response(&mut self) -> Result<RawResponse, FrameError> {
        let response = self.read_response_inner().await;
        if self.buf.capacity() > IDLE_BUFFER_BYTES {
            self.buf.shrink_to(IDLE_BUFFER_BYTES.max(self.buf.len()));
        }
        response
    }

    async fn read_response_inner(&mut self) -> Result<RawResponse, FrameError> {
        self.received = self.buf.len();
        loop {
            let head = self.read_head().await?;
            let (http_minor, status, reason, headers) = head;
            if (100..200).contains(&status) {
                continue;
            }
            let mut must_close =
                http_minor == 0 && !header_has_token(&headers, "connection", "keep-alive");
            if header_has_token(&headers, "connection", "close") {
                must_close = true;
            }
            let body = if status == 204 || status == 304 {
                Vec::new()
            } else if let Some(te) = header(&headers, "transfer-encoding") {
                if te
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
                {
                    self.read_chunked().await?
                } else {
                    must_close = true;
                    self.read_to_close().await?
                }
            } else if let Some(length) = content_length(&headers)? {
                self.read_exact_body(length).await?
            } else {
                must_close = true;
                self.read_to_close().await?
            };
            return Ok(RawResponse {
                http_minor,
                status,
                reason,
                headers,
                body,
                must_close,
            });
        }
    }

    #[allow(clippy::type_complexity)]
    async fn read_head(&mut self) -> Result<(u8, u16, String, Vec<(String, String)>), FrameError> {
        loop {
            if !self.buf.is_empty() {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut slots);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(head_len)) => {
                        let http_minor = parsed.version.unwrap_or(1);
                        let status = parsed.code.unwrap_or(0);
                        let reason = parsed.reason.unwrap_or("").to_string();
                        let headers = parsed
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).trim().to_string(),
                                )
                            })
                            .collect();
                        self.buf.drain(..head_len);
                        return Ok((http_minor, status, reason, headers));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        let start = String::from_utf8_lossy(&self.buf[..self.buf.len().min(40)]);
                        return Err(FrameError::Malformed(format!(
                            "bad response head ({e}), starting {start:?}"
                        )));
                    }
                }
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(FrameError::Malformed(format!(
                    "response head longer than {MAX_HEAD_BYTES} bytes"
                )));
            }
            self.fill_or_closed("before the response head was complete")
                .await?;
        }
    }

    async fn read_exact_body(&mut self, length: usize) -> Result<Vec<u8>, FrameError> {
        if length > MAX_BODY_BYTES {
            return Err(FrameError::Malformed(format!(
                "Content-Length {length} exceeds the {MAX_BODY_BYTES}-byte limit"
            )));
        }
        while self.buf.len() < length {
            self.fill_or_closed("before the Content-Length body was complete")
                .await?;
        }
        Ok(self.buf.drain(..length).collect())
    }

    async fn read_to_close(&mut self) -> Result<Vec<u8>, FrameError> {
        while self.fill().await? > 0 {
            if self.buf.len() > MAX_BODY_BYTES {
                return Err(FrameError::Malformed(format!(
                    "body exceeds the {MAX_BODY_BYTES}-byte limit"
                )));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, FrameError> {
        let mut body = Vec::new();
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((consumed, size))) => {
                        self.buf.drain(..consumed);
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > 1024 {
                            return Err(FrameError::Malformed("chunk size line too long".into()));
                        }
                        self.fill_or_closed("inside a chunked body").await?;
                    }
                    Err(_) => {
                        return Err(FrameError::Malformed("bad chunk size line".into()));
                    }
                }
            };
            if size == 0 {
                return self.skip_trailers().await.map(|()| body);
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|s| body.len().saturating_add(*s) <= MAX_BODY_BYTES)
                .ok_or_else(|| {
                    FrameError::Malformed(format!(
                        "chunked body exceeds the {MAX_BODY_BYTES}-byte limit"
                    ))
                })?;
            while self.buf.len() < size + 2 {
                self.fill_or_closed("inside a chunked body").await?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(FrameError::Malformed(
                    "chunk data not followed by CRLF".into(),
                ));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    async fn skip_trailers(&mut self) -> Result<(), FrameError> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                self.buf.drain(..end + 2);
                if end == 0 {
                    return Ok(());
                }
                continue;
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(FrameError::Malformed("chunked trailers too long".into()));
            }
            self.fill_or_closed("inside the chunked trailers").await?;
        }
    }
}

/// The first value of a header, by case-insensitive name.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, FrameError> {
    let mut found: Option<usize> = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in value.split(',') {
            let length = part
                .trim()
                .parse::<usize>()
                .map_err(|_| FrameError::Malformed(format!("bad Content-Length {value:?}")))?;
            if found.is_some_and(|f| f != length) {
                return Err(FrameError::Malformed(format!(
                    "conflicting Content-Length values {value:?}"
                )));
            }
            found = Some(length);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves scripted bytes in the given pieces, then EOF (or hangs forever).
    struct Scripted {
        pieces: Vec<Vec<u8>>,
        hang_at_end: bool,
    }

    impl ByteIo for Scripted {
        async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pieces.is_empty() {
                if self.hang_at_end {
                    smol::future::pending::<()>().await;
                }
                return Ok(0);
            }
            let mut piece = self.pieces.remove(0);
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            if n < piece.len() {
                self.pieces.insert(0, piece.split_off(n));
            }
            Ok(n)
        }
        async fn write_all(&mut self, _buf: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }

    fn conn(pieces: &[&[u8]], hang: bool) -> BufConn<Scripted> {
        BufConn::new(
            Scripted {
                pieces: pieces.iter().map(|p| p.to_vec()).collect(),
                hang_at_end: hang,
            },
            Duration::from_millis(200),
        )
    }

    #[test]
    fn content_length_in_pieces_keeps_alive_and_leaves_next_response() {
        let mut c = conn(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 5\r\n\r\nhel",
                b"loHTTP/1.1 204 No Content\r\n\r\n",
            ],
            true,
        );
        let r = smol::block_on(c.read_response()).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.must_close),
            (200, &b"hello"[..], false)
        );
        let r = smol::block_on(c.read_response()).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        assert_eq!(c.leftover(), 0);
    }

    #[test]
    fn a_large_body_does_not_keep_its_buffer_once_read() {
        let body = vec![b'x'; 600 * 1024];
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let pieces: Vec<&[u8]> = std::iter::once(head.as_bytes())
            .chain(body.chunks(8192))
            .chain(std::iter::once(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]))
            .collect();
        let mut c = conn(&pieces, true);
        let r = smol::block_on(c.read_response()).unwrap();
        assert_eq!(r.body.len(), 600 * 1024);
        assert!(
            c.buf.capacity() <= IDLE_BUFFER_BYTES,
            "{} bytes kept",
            c.buf.capacity()
        );
        // Whatever followed the body is still there for the next response.
        let r = smol::block_on(c.read_response()).unwrap();
        assert_eq!(r.status, 204);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let mut c = conn(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n",
                b"5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n",
            ],
            true,
        );
        let r = smol::block_on(c.read_response()).unwrap();
        assert_eq!(r.body, b"Wikipedia");
        assert!(!r.must_close);
    }

    #[test]
    fn http10_reads_to_close_and_must_close() {
        let mut c = conn(
            &[b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n<a/>", b"<b/>"],
            false,
        );
        let r = smol::block_on(c.read_response()).unwrap();
        assert_eq!(
            (r.http_minor, r.body.as_slice(), r.must_close),
            (0, &b"<a/><b/>"[..], true)
        );
    }

    #[test]
    fn connection_close_header_and_interim_100() {
        let mut c = conn(
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nLocation: /edev/3\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"],
            false,
        );
        let r = smol::block_on(c.read_response()).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(header(&r.headers, "location"), Some("/edev/3"));
        assert!(r.must_close);
    }

    #[test]
    fn closed_mid_body_is_an_error_not_a_short_body() {
        let mut c = conn(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            false,
        );
        match smol::block_on(c.read_response()) {
            Err(FrameError::Closed { received, .. }) => assert!(received > 0),
            other => panic!("expected Closed, got {other:?}"),
        }
        let mut c = conn(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"],
            false,
        );
        assert!(matches!(
            smol::block_on(c.read_response()),
            Err(FrameError::Closed { .. })
        ));
        let mut c = conn(&[], false);
        assert!(matches!(
            smol::block_on(c.read_response()),
            Err(FrameError::Closed { received: 0, .. })
        ));
    }

    #[test]
    fn silence_is_a_timeout() {
        let mut c = conn(&[b"HTTP/1.1 200 OK\r\n"], true);
        assert!(matches!(
            smol::block_on(c.read_response()),
            Err(FrameError::Timeout(_))
        ));
    }

    #[test]
    fn malformed_heads_and_lengths_are_rejected() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"<html>hello</html>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut c = conn(&[bad], false);
            assert!(
                matches!(
                    smol::block_on(c.read_response()),
                    Err(FrameError::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
