//! The framed protocol between the pool and a worker: a 4-byte big-endian length, then that
//! many bytes. A reply's bytes are UTF-8 JSON; a request's are its trace header (see
//! [`write_request`]), a newline, then UTF-8 JSON.

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The worker closed its end (it exited or crashed).
    #[error("the worker closed the pipe")]
    Closed,
    /// A reply announced more bytes than allowed.
    #[error("a reply frame of {len} bytes exceeds the limit of {max} bytes (`max_frame_bytes`)")]
    TooLarge { len: usize, max: usize },
    /// A request would be larger than allowed; nothing was written.
    #[error("the request is larger than `max_frame_bytes` ({max} bytes); it was not sent")]
    RequestTooLarge { max: usize },
    /// The frame's bytes are not JSON.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The pipe failed.
    #[error("pipe error: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes a request: the frame's body is the request's trace header (empty when it has no
/// trace), a newline, then the JSON. The header stays out of the JSON so that neither side
/// escapes or parses it per call; JSON as written here holds no raw newline. `buf` is reused
/// from one request to the next.
///
/// A body over `max` bytes is [`FrameError::RequestTooLarge`], found while encoding (which
/// stops there) and before anything is written: the worker never sees it.
pub(crate) async fn write_request<W: AsyncWrite + Unpin>(
    out: &mut W,
    buf: &mut Vec<u8>,
    trace_header: &[u8],
    message: &Value,
    max: usize,
) -> Result<(), FrameError> {
    /// Appends to the buffer until the frame would exceed its limit, then refuses.
    struct Capped<'a> {
        buf: &'a mut Vec<u8>,
        limit: usize,
        over: bool,
    }
    impl std::io::Write for Capped<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.buf.len() + bytes.len() > self.limit {
                self.over = true;
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.buf.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    debug_assert!(!trace_header.contains(&b'\n'));
    // The wire length is 32 bits.
    let max = max.min(u32::MAX as usize);
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(trace_header);
    buf.push(b'\n');
    let mut capped = Capped {
        buf: &mut *buf,
        limit: max + 4,
        over: false,
    };
    let encoded = serde_json::to_writer(&mut capped, message);
    if capped.over || buf.len() - 4 > max {
        return Err(FrameError::RequestTooLarge { max });
    }
    encoded.map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    out.write_all(buf).await?;
    out.flush().await?;
    Ok(())
}

pub(crate) async fn read_frame<T: serde::de::DeserializeOwned, R: AsyncRead + Unpin>(
    input: &mut R,
    max: usize,
) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    match input.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    match input.read_exact(&mut body).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    serde_json::from_slice(&body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_ones_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let msg = serde_json::json!({"id": 1, "ok": true, "result": [1, "two\nlines"]});
        let mut buf = vec![9; 3];
        write_request(&mut a, &mut buf, b"00-trace", &msg, 1024)
            .await
            .unwrap();
        let mut header = [0u8; 4];
        b.read_exact(&mut header).await.unwrap();
        let mut body = vec![0; u32::from_be_bytes(header) as usize];
        b.read_exact(&mut body).await.unwrap();
        let newline = body.iter().position(|&c| c == b'\n').unwrap();
        assert_eq!(&body[..newline], b"00-trace");
        let json: Value = serde_json::from_slice(&body[newline + 1..]).unwrap();
        assert_eq!(json, msg);
        // Without a trace the header is empty; the buffer is reused.
        write_request(&mut a, &mut buf, b"", &msg, 1024)
            .await
            .unwrap();
        assert_eq!(
            &buf[4..],
            [&b"\n"[..], &serde_json::to_vec(&msg).unwrap()].concat()
        );
        b.read_exact(&mut vec![0; buf.len()]).await.unwrap();

        // A request over the cap is refused before a byte is written; one at the cap is not.
        let at_cap = buf.len() - 4;
        let (mut c, mut d) = tokio::io::duplex(4096);
        write_request(&mut c, &mut buf, b"", &msg, at_cap)
            .await
            .unwrap();
        d.read_exact(&mut vec![0; at_cap + 4]).await.unwrap();
        let big = serde_json::json!({"id": 2, "args": ["z".repeat(5000)]});
        for cap in [at_cap - 1, 1024] {
            let refused = write_request(&mut c, &mut buf, b"00-trace", &big, cap).await;
            assert!(
                matches!(refused, Err(FrameError::RequestTooLarge { max }) if max == cap),
                "{refused:?}"
            );
        }
        assert!(buf.len() <= 1024 + 4, "encoding stops at the cap");
        drop(c);
        assert_eq!(d.read(&mut [0; 8]).await.unwrap(), 0, "nothing was written");
        assert!(matches!(
            write_request(&mut a, &mut buf, b"", &msg, at_cap - 1).await,
            Err(FrameError::RequestTooLarge { .. })
        ));

        // A reply is JSON alone.
        let reply = serde_json::to_vec(&msg).unwrap();
        a.write_all(&(reply.len() as u32).to_be_bytes())
            .await
            .unwrap();
        a.write_all(&reply).await.unwrap();
        assert_eq!(read_frame::<Value, _>(&mut b, 1024).await.unwrap(), msg);

        a.write_all(&100_000u32.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame::<Value, _>(&mut b, 1024).await,
            Err(FrameError::TooLarge { len: 100_000, .. })
        ));

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        assert!(matches!(
            read_frame::<Value, _>(&mut b, 1024).await,
            Err(FrameError::Malformed(_))
        ));

        let (a, mut b) = tokio::io::duplex(1024);
        drop(a);
        assert!(matches!(
            read_frame::<Value, _>(&mut b, 1024).await,
            Err(FrameError::Closed)
        ));
    }

    /// The worker refuses to send a reply nested deeper than this reader takes (its
    /// `_MAX_DEPTH`): a reply that is not read would cost the worker its life.
    #[tokio::test]
    async fn replies_nest_at_most_127_deep() {
        for (depth, readable) in [(127, true), (128, false)] {
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let (mut a, mut b) = tokio::io::duplex(1024);
            a.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            a.write_all(body.as_bytes()).await.unwrap();
            let read = read_frame::<Value, _>(&mut b, 1024).await;
            assert_eq!(read.is_ok(), readable, "{depth}: {read:?}");
        }
    }
}
