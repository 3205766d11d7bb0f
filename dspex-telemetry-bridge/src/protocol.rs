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
    /// A frame announced more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
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
pub(crate) async fn write_request<W: AsyncWrite + Unpin>(
    out: &mut W,
    buf: &mut Vec<u8>,
    trace_header: &[u8],
    message: &Value,
) -> Result<(), FrameError> {
    debug_assert!(!trace_header.contains(&b'\n'));
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(trace_header);
    buf.push(b'\n');
    serde_json::to_writer(&mut *buf, message).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = u32::try_from(buf.len() - 4).map_err(|_| FrameError::TooLarge {
        len: buf.len() - 4,
        max: u32::MAX as usize,
    })?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    out.write_all(buf).await?;
    out.flush().await?;
    Ok(())
}

pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    input: &mut R,
    max: usize,
) -> Result<Value, FrameError> {
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
        write_request(&mut a, &mut buf, b"00-trace", &msg)
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
        write_request(&mut a, &mut buf, b"", &msg).await.unwrap();
        assert_eq!(
            &buf[4..],
            [&b"\n"[..], &serde_json::to_vec(&msg).unwrap()].concat()
        );
        b.read_exact(&mut vec![0; buf.len()]).await.unwrap();

        // A reply is JSON alone.
        let reply = serde_json::to_vec(&msg).unwrap();
        a.write_all(&(reply.len() as u32).to_be_bytes())
            .await
            .unwrap();
        a.write_all(&reply).await.unwrap();
        assert_eq!(read_frame(&mut b, 1024).await.unwrap(), msg);

        a.write_all(&100_000u32.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(FrameError::TooLarge { len: 100_000, .. })
        ));

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(FrameError::Malformed(_))
        ));

        let (a, mut b) = tokio::io::duplex(1024);
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(FrameError::Closed)
        ));
    }
}
