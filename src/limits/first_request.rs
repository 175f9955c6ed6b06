//! Tells, from the bytes a client has sent, when its first request's headers
//! are complete: for HTTP/2, the 24-byte preface and then frames until a
//! HEADERS frame (or HEADERS and CONTINUATION frames) ending with
//! END_HEADERS has been read whole; for HTTP/1.1 (grpc-web), the blank line
//! that ends the request head. Nothing is buffered: a few bytes of state
//! follow the stream however the reads split it.

/// The client connection preface of RFC 9113 §3.4.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
/// RFC 9113 §6.2, §6.10.
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows a connection until its first request head has arrived.
#[derive(Debug, Clone)]
pub struct FirstRequest {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// As many bytes as `matched` agree with the HTTP/2 preface.
    Preface {
        matched: usize,
    },
    Http1(Http1),
    /// Reading a frame header; `in_block` while a header block that has not
    /// ended yet awaits its CONTINUATION.
    FrameHeader {
        header: [u8; FRAME_HEADER_LEN],
        filled: usize,
        in_block: bool,
    },
    /// Skipping a frame's payload; `ends_block` when the frame carries
    /// END_HEADERS, so that the request head is complete with its last byte.
    Payload {
        remaining: usize,
        ends_block: bool,
        in_block: bool,
    },
    Complete,
    /// A header block interrupted by another frame, or a CONTINUATION with
    /// no block to continue: a protocol error that the server answers by
    /// closing, and no request that lifts the deadline.
    Broken,
}

/// An HTTP/1 request head ends at the first empty line after a non-empty
/// one. httparse accepts a bare LF as a line end, so a CR is ignored;
/// empty lines before the request line (which RFC 9112 §2.2 lets a server
/// skip) do not end anything.
#[derive(Debug, Clone, Copy)]
struct Http1 {
    at_line_start: bool,
    seen_text: bool,
}

impl Http1 {
    const START: Self = Self {
        at_line_start: true,
        seen_text: false,
    };

    /// Whether `byte` ends the head.
    fn feed(&mut self, byte: u8) -> bool {
        match byte {
            b'\n' if self.at_line_start && self.seen_text => return true,
            b'\n' => self.at_line_start = true,
            b'\r' => {}
            _ => {
                self.at_line_start = false;
                self.seen_text = true;
            }
        }
        false
    }
}

impl Default for FirstRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl FirstRequest {
    pub fn new() -> Self {
        Self {
            state: State::Preface { matched: 0 },
        }
    }

    /// Whether the first request head has been read whole.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Complete)
    }

    /// Takes the next bytes the client sent; true once the first request
    /// head is complete (and from then on).
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Complete => return true,
                State::Broken => return false,
                State::Preface { matched } => {
                    let byte = bytes[0];
                    if PREFACE.get(*matched) == Some(&byte) {
                        *matched += 1;
                        bytes = &bytes[1..];
                        if *matched == PREFACE.len() {
                            self.state = State::FrameHeader {
                                header: [0; FRAME_HEADER_LEN],
                                filled: 0,
                                in_block: false,
                            };
                        }
                    } else {
                        // Not HTTP/2: what matched so far was the start of
                        // an HTTP/1 request line. The byte itself is read
                        // again in the new state.
                        let mut http1 = Http1::START;
                        let mut complete = false;
                        for &b in &PREFACE[..*matched] {
                            complete |= http1.feed(b);
                        }
                        self.state = if complete {
                            State::Complete
                        } else {
                            State::Http1(http1)
                        };
                    }
                }
                State::Http1(http1) => match bytes.iter().position(|&b| http1.feed(b)) {
                    Some(_) => self.state = State::Complete,
                    None => return false,
                },
                State::FrameHeader {
                    header,
                    filled,
                    in_block,
                } => {
                    let take = (FRAME_HEADER_LEN - *filled).min(bytes.len());
                    header[*filled..*filled + take].copy_from_slice(&bytes[..take]);
                    *filled += take;
                    bytes = &bytes[take..];
                    if *filled == FRAME_HEADER_LEN {
                        self.state = frame(header, *in_block);
                    }
                }
                State::Payload {
                    remaining,
                    ends_block,
                    in_block,
                } => {
                    let take = (*remaining).min(bytes.len());
                    *remaining -= take;
                    bytes = &bytes[take..];
                    if *remaining == 0 {
                        self.state = after_payload(*ends_block, *in_block);
                    }
                }
            }
        }
        self.is_complete()
    }
}

/// The state after a frame header has been read.
fn frame(header: &[u8; FRAME_HEADER_LEN], in_block: bool) -> State {
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let (kind, flags) = (header[3], header[4]);
    let (ends_block, in_block) = match (kind, in_block) {
        (HEADERS, false) | (CONTINUATION, true) => {
            let ends = flags & END_HEADERS != 0;
            (ends, !ends)
        }
        // RFC 9113 §6.10: nothing may come between a header block's frames.
        (_, true) | (CONTINUATION, false) => return State::Broken,
        (_, false) => (false, false),
    };
    if length == 0 {
        after_payload(ends_block, in_block)
    } else {
        State::Payload {
            remaining: length,
            ends_block,
            in_block,
        }
    }
}

fn after_payload(ends_block: bool, in_block: bool) -> State {
    if ends_block {
        State::Complete
    } else {
        State::FrameHeader {
            header: [0; FRAME_HEADER_LEN],
            filled: 0,
            in_block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: u8 = 0x4;
    const DATA: u8 = 0x0;
    const WINDOW_UPDATE: u8 = 0x8;

    fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The preface and an empty SETTINGS frame, as every HTTP/2 client opens.
    fn opening() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame_bytes(SETTINGS, 0, 0, &[]));
        out
    }

    /// Feeds `bytes` in one go and, separately, one byte at a time; both
    /// must agree. Returns after which byte (1-based) the head was complete.
    fn completes_after(bytes: &[u8]) -> Option<usize> {
        let whole = FirstRequest::new().feed(bytes);
        let mut watcher = FirstRequest::new();
        let at = bytes
            .iter()
            .position(|&b| watcher.feed(&[b]))
            .map(|i| i + 1);
        assert_eq!(whole, at.is_some(), "one read and single bytes disagree");
        at
    }

    #[test]
    fn an_http2_request_counts_once_its_headers_frame_has_been_read_whole() {
        let mut bytes = opening();
        bytes.extend(frame_bytes(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        bytes.extend(frame_bytes(HEADERS, END_HEADERS, 1, &[0x82; 40]));
        assert_eq!(completes_after(&bytes), Some(bytes.len()));
        // One byte short of the frame's end is not enough.
        assert_eq!(completes_after(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn a_preface_and_settings_alone_are_no_request() {
        let mut bytes = opening();
        bytes.extend(frame_bytes(SETTINGS, 0x1, 0, &[]));
        bytes.extend(frame_bytes(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]));
        assert_eq!(completes_after(&bytes), None);
        assert_eq!(completes_after(&PREFACE[..1]), None);
    }

    #[test]
    fn a_header_block_continued_counts_at_the_frame_that_ends_it() {
        let mut bytes = opening();
        bytes.extend(frame_bytes(HEADERS, 0, 1, &[0x82; 10]));
        bytes.extend(frame_bytes(CONTINUATION, 0, 1, &[0x84; 10]));
        let before_last = bytes.len();
        bytes.extend(frame_bytes(CONTINUATION, END_HEADERS, 1, &[0x86; 10]));
        assert_eq!(completes_after(&bytes), Some(bytes.len()));
        assert_eq!(completes_after(&bytes[..before_last]), None);
    }

    #[test]
    fn an_empty_headers_frame_with_end_headers_counts_at_its_frame_header() {
        let mut bytes = opening();
        bytes.extend(frame_bytes(HEADERS, END_HEADERS, 1, &[]));
        assert_eq!(completes_after(&bytes), Some(bytes.len()));
    }

    #[test]
    fn a_header_block_interrupted_by_another_frame_never_counts() {
        let mut bytes = opening();
        bytes.extend(frame_bytes(HEADERS, 0, 1, &[0x82; 10]));
        bytes.extend(frame_bytes(DATA, 0, 1, &[0; 5]));
        bytes.extend(frame_bytes(HEADERS, END_HEADERS, 3, &[0x82; 10]));
        assert_eq!(completes_after(&bytes), None);
    }

    #[test]
    fn a_continuation_with_no_block_to_continue_never_counts() {
        let mut bytes = opening();
        bytes.extend(frame_bytes(CONTINUATION, END_HEADERS, 1, &[0x82; 10]));
        bytes.extend(frame_bytes(HEADERS, END_HEADERS, 1, &[0x82; 10]));
        assert_eq!(completes_after(&bytes), None);
    }

    #[test]
    fn unknown_frame_types_and_large_payloads_are_skipped() {
        let mut bytes = opening();
        // A frame type no one defined yet (ignored by RFC 9113 §4.1), whose
        // payload happens to look like a HEADERS frame header.
        let fake = frame_bytes(HEADERS, END_HEADERS, 1, &[]);
        bytes.extend(frame_bytes(0xfa, 0xff, 0, &fake));
        bytes.extend(frame_bytes(DATA, 0, 1, &vec![0x01; 70_000]));
        assert_eq!(completes_after(&bytes), None);
        bytes.extend(frame_bytes(HEADERS, END_HEADERS | 0x1, 1, &[0x82]));
        assert_eq!(completes_after(&bytes), Some(bytes.len()));
    }

    #[test]
    fn an_http1_request_counts_at_the_blank_line_after_its_head() {
        let head = b"POST /warden.v1.Auth/GetJwks HTTP/1.1\r\nHost: x\r\ncontent-type: application/grpc-web\r\n\r\n";
        assert_eq!(completes_after(head), Some(head.len()));
        assert_eq!(completes_after(&head[..head.len() - 1]), None);
        // httparse takes bare LFs too.
        let bare = b"GET /healthz HTTP/1.1\nHost: x\n\n";
        assert_eq!(completes_after(bare), Some(bare.len()));
    }

    #[test]
    fn blank_lines_before_the_request_line_end_no_head() {
        assert_eq!(completes_after(b"\r\n\r\n\n\r\n"), None);
        assert_eq!(completes_after(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"), Some(22));
    }

    #[test]
    fn a_start_like_the_preface_that_turns_out_otherwise_is_read_as_http1() {
        let head = b"PRI * HTTP/1.1\r\n\r\n";
        assert_eq!(completes_after(head), Some(head.len()));
        // The whole first line of the preface, then something else: the
        // blank line that was part of what matched already ended a head.
        let mut odd = PREFACE[..18].to_vec();
        odd.extend_from_slice(b"XY");
        assert_eq!(completes_after(&odd), Some(19));
    }

    #[test]
    fn garbage_is_no_request() {
        let mut state = 0x2545_f491_u32;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                // No line feeds, so no HTTP/1 head can end.
                match state as u8 {
                    b'\n' => b'x',
                    b => b,
                }
            })
            .collect();
        assert_eq!(completes_after(&garbage), None);
        assert_eq!(completes_after(&[0u8; 1000]), None);
        let mut h2_garbage = PREFACE.to_vec();
        h2_garbage.extend_from_slice(&[0xff; 9]);
        h2_garbage.extend_from_slice(&garbage);
        assert_eq!(completes_after(&h2_garbage), None);
    }
}
