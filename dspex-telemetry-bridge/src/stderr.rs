//! A worker's stderr, drained line by line for as long as anything holds the pipe open.
//!
//! Bytes, not text: a worker may write anything there. Each line is converted lossily, escaped
//! and cut to [`LINE_LIMIT`] bytes; the rest of a longer line is read and dropped, so a worker
//! writing without newlines costs no more memory than one short line.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use dspex_telemetry_core::log_safe;

/// The most bytes of one stderr line that are kept.
pub(crate) const LINE_LIMIT: usize = 4096;

/// Reads `input` to its end, calling `log` once per line (escaped, at most [`LINE_LIMIT`]
/// bytes of it, `…` marking a cut). Ends only at the end of the pipe or a read error.
pub(crate) async fn drain<R: AsyncRead + Unpin>(input: R, mut log: impl FnMut(&str)) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::with_capacity(256);
    // Inside a line already logged up to the limit: its rest is dropped.
    let mut cut = false;
    loop {
        line.clear();
        match (&mut reader)
            .take(LINE_LIMIT as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let ended = line.last() == Some(&b'\n');
        if !cut {
            let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            let mut text = log_safe(&String::from_utf8_lossy(bytes), LINE_LIMIT);
            if !ended && line.len() == LINE_LIMIT {
                text.push('…');
            }
            log(&text);
        }
        cut = !ended;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn lines(input: &[u8]) -> Vec<String> {
        let (mut a, b) = tokio::io::duplex(1024);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            a.write_all(&input).await.unwrap();
        });
        let mut seen = Vec::new();
        drain(b, |line| seen.push(line.to_owned())).await;
        writer.await.unwrap();
        seen
    }

    #[tokio::test]
    async fn lines_are_bytes_made_safe_and_bounded() {
        // Bytes that are not UTF-8 do not end the drain.
        assert_eq!(
            lines(b"one\n\xff\xfe two\r\nthree \x1b[31m\nno newline").await,
            [
                "one",
                "\u{fffd}\u{fffd} two",
                "three \\u{1b}[31m",
                "no newline"
            ]
        );
        // A long line is logged once, cut; its rest is dropped, and the next line is whole.
        let mut long = vec![b'x'; 3 * LINE_LIMIT + 17];
        long.extend_from_slice(b"\nnext\n");
        let seen = lines(&long).await;
        assert_eq!(
            seen.len(),
            2,
            "{:?}",
            seen.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(seen[0], format!("{}…", "x".repeat(LINE_LIMIT)));
        assert_eq!(seen[1], "next");
        // Exactly at the limit with its newline: whole.
        let mut exact = vec![b'y'; LINE_LIMIT - 1];
        exact.push(b'\n');
        assert_eq!(lines(&exact).await, ["y".repeat(LINE_LIMIT - 1)]);
    }
}
