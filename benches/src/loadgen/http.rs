//! The HTTP/1.1 client side of `loadgen`: the request it sends and an incremental parser for
//! the response it reads back.
//!
//! Implements the parts of RFC 9112 a load generator needs: the status line (§4), header
//! fields (§5), the message body length rules (§6.3: no body for 1xx/204/304, chunked
//! transfer coding wins over Content-Length, otherwise Content-Length, otherwise the body
//! runs to the end of the connection), the chunked coding with extensions and trailers
//! (§7.1), and persistence (§9.3: HTTP/1.1 persists unless `Connection: close`, HTTP/1.0
//! only with `Connection: keep-alive`).
//!
//! The parser is fed whatever each `read` returned, however the response was split, and
//! never allocates more than the response head (bounded) and one chunk-size line.

use std::fmt;

/// A response head larger than this is treated as malformed (lighttpd answers with a few
/// hundred bytes; anything near this limit is not a server worth benchmarking).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// Builds the request bytes sent for every request: `GET PATH HTTP/1.1` with `Host`, a
/// `Connection` header saying whether the connection is kept, and the caller's extra
/// header lines (already validated to hold no CR or LF).
pub(crate) fn build_request(
    host_header: &str,
    path: &str,
    keep_alive: bool,
    extra_headers: &[String],
) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: netpop-loadgen\r\n\
         Accept: */*\r\nConnection: {connection}\r\n"
    );
    for header in extra_headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// Why a response could not be read to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseError {
    /// The connection ended before a single byte of the response arrived.
    NoResponse,
    /// The connection ended inside the head or the body.
    Truncated,
    /// The bytes are not an HTTP/1.x response (status line, header, length or chunk
    /// framing).
    Malformed,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseError::NoResponse => "connection closed before any response byte",
            ResponseError::Truncated => "connection closed inside the response",
            ResponseError::Malformed => "malformed HTTP response",
        })
    }
}

/// A response read to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code from the status line.
    pub(crate) status: u16,
    /// Body bytes after removing the chunked framing.
    pub(crate) body_bytes: u64,
    /// Whether the server lets the connection carry another request.
    pub(crate) keep_alive: bool,
}

/// What a call to [`ResponseParser::feed`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// All bytes were consumed and the response is not complete yet.
    NeedMore,
    /// The response ended after `consumed` bytes of the slice just fed; any bytes after
    /// that belong to no request this client sent.
    Complete { response: Response, consumed: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// `remaining` bytes of a Content-Length body are still to come.
    Length { remaining: u64 },
    /// Inside a chunked body.
    Chunked(Chunked),
    /// No length given: the body ends when the connection does.
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line (size, optional extensions, CRLF).
    SizeLine,
    /// `remaining` bytes of chunk data are still to come.
    Data { remaining: u64 },
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Body(Body),
    Done,
}

#[derive(Clone, Copy, Debug)]
struct Head {
    status: u16,
    keep_alive: bool,
}

/// Reads one HTTP/1.x response from a byte stream delivered in pieces of any size.
///
/// Call [`feed`](Self::feed) with every chunk read from the socket until it reports
/// [`Progress::Complete`], and [`finish`](Self::finish) when the connection ends first.
/// [`reset`](Self::reset) makes it ready for the next response on a kept connection while
/// keeping its buffers.
#[derive(Debug)]
pub(crate) struct ResponseParser {
    state: State,
    /// Bytes of the head so far (or of the current chunk-size/trailer line).
    line: Vec<u8>,
    head: Option<Head>,
    body_bytes: u64,
    /// Any byte of this response has been seen (distinguishes "server said nothing" from
    /// "server stopped half-way").
    started: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser {
            state: State::Head,
            line: Vec::new(),
            head: None,
            body_bytes: 0,
            started: false,
        }
    }
}

impl ResponseParser {
    /// Forgets the previous response.
    pub(crate) fn reset(&mut self) {
        self.state = State::Head;
        self.line.clear();
        self.head = None;
        self.body_bytes = 0;
        self.started = false;
    }

    /// Whether any byte of the current response has arrived.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Consumes `data`, the next bytes from the connection.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Progress, ResponseError> {
        if !data.is_empty() {
            self.started = true;
        }
        let mut offset = 0;
        loop {
            let rest = data.get(offset..).unwrap_or_default();
            match self.state {
                State::Done => {
                    return Ok(Progress::Complete { response: self.response()?, consumed: offset });
                }
                State::Head => {
                    if rest.is_empty() {
                        return Ok(Progress::NeedMore);
                    }
                    offset += self.read_head(rest)?;
                }
                State::Body(Body::UntilClose) => {
                    self.body_bytes += rest.len() as u64;
                    return Ok(Progress::NeedMore);
                }
                State::Body(Body::Length { remaining }) => {
                    let take = remaining.min(rest.len() as u64);
                    self.body_bytes += take;
                    offset += take as usize;
                    let remaining = remaining - take;
                    if remaining == 0 {
                        self.state = State::Done;
                    } else {
                        self.state = State::Body(Body::Length { remaining });
                        return Ok(Progress::NeedMore);
                    }
                }
                State::Body(Body::Chunked(chunked)) => {
                    if rest.is_empty() {
                        return Ok(Progress::NeedMore);
                    }
                    offset += self.read_chunked(chunked, rest)?;
                }
            }
        }
    }

    /// Reports the end of the connection: completes a body that runs to the close, and is an
    /// error anywhere else before the response ended.
    pub(crate) fn finish(&mut self) -> Result<Response, ResponseError> {
        match self.state {
            State::Done => self.response(),
            State::Body(Body::UntilClose) => {
                self.state = State::Done;
                self.response()
            }
            State::Head if !self.started => Err(ResponseError::NoResponse),
            State::Head | State::Body(_) => Err(ResponseError::Truncated),
        }
    }

    fn response(&self) -> Result<Response, ResponseError> {
        let head = self.head.ok_or(ResponseError::Malformed)?;
        Ok(Response {
            status: head.status,
            body_bytes: self.body_bytes,
            keep_alive: head.keep_alive,
        })
    }

    /// Collects head bytes until the empty line; returns how many bytes of `data` it took.
    fn read_head(&mut self, data: &[u8]) -> Result<usize, ResponseError> {
        // Look for the blank line across the seam with what was buffered before.
        let search_from = self.line.len().saturating_sub(3);
        let before = self.line.len();
        self.line.extend_from_slice(data);
        let Some(end) = find(&self.line[search_from..], b"\r\n\r\n").map(|at| search_from + at + 4)
        else {
            if self.line.len() > MAX_HEAD_BYTES {
                return Err(ResponseError::Malformed);
            }
            return Ok(data.len());
        };
        if end > MAX_HEAD_BYTES {
            return Err(ResponseError::Malformed);
        }
        let head = parse_head(&self.line[..end])?;
        self.line.clear();
        let taken = end - before;
        match head.status {
            // Interim responses (100 Continue, 103 Early Hints) precede the real one
            // (RFC 9110 §15.2); a switch of protocols was never asked for.
            101 => return Err(ResponseError::Malformed),
            100..=199 => return Ok(taken),
            _ => {}
        }
        self.head = Some(Head { status: head.status, keep_alive: head.keep_alive });
        self.state = match head.body {
            _ if head.status == 204 || head.status == 304 => State::Done,
            Some(Body::Length { remaining: 0 }) => State::Done,
            Some(body) => State::Body(body),
            None => State::Body(Body::UntilClose),
        };
        if self.state == State::Body(Body::UntilClose) {
            // Only the close ends such a body, so the connection cannot be reused.
            if let Some(head) = self.head.as_mut() {
                head.keep_alive = false;
            }
        }
        Ok(taken)
    }

    /// Advances through chunked framing; returns how many bytes of `data` it took.
    fn read_chunked(&mut self, chunked: Chunked, data: &[u8]) -> Result<usize, ResponseError> {
        match chunked {
            Chunked::Data { remaining } => {
                let take = remaining.min(data.len() as u64);
                self.body_bytes += take;
                let remaining = remaining - take;
                self.state = State::Body(Body::Chunked(if remaining == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data { remaining }
                }));
                Ok(take as usize)
            }
            Chunked::SizeLine | Chunked::DataEnd | Chunked::Trailer => {
                let Some((line_end, taken)) = self.take_line(data)? else {
                    return Ok(data.len());
                };
                let line = &self.line[..line_end];
                let next = match chunked {
                    Chunked::SizeLine => match parse_chunk_size(line)? {
                        0 => Chunked::Trailer,
                        size => Chunked::Data { remaining: size },
                    },
                    Chunked::DataEnd if line.is_empty() => Chunked::SizeLine,
                    Chunked::DataEnd => return Err(ResponseError::Malformed),
                    // Trailer fields are not needed; the empty line ends the message.
                    _ if line.is_empty() => {
                        self.line.clear();
                        self.state = State::Done;
                        return Ok(taken);
                    }
                    _ => Chunked::Trailer,
                };
                self.line.clear();
                self.state = State::Body(Body::Chunked(next));
                Ok(taken)
            }
        }
    }

    /// Buffers bytes of a CRLF-terminated line. Returns the line's length without the CRLF
    /// and how many bytes of `data` completed it, or `None` when all of `data` was buffered.
    fn take_line(&mut self, data: &[u8]) -> Result<Option<(usize, usize)>, ResponseError> {
        let Some(lf) = data.iter().position(|&byte| byte == b'\n') else {
            self.line.extend_from_slice(data);
            if self.line.len() > MAX_CHUNK_LINE_BYTES {
                return Err(ResponseError::Malformed);
            }
            return Ok(None);
        };
        self.line.extend_from_slice(&data[..lf]);
        // RFC 9112 §2.2 lets a recipient accept a bare LF as a line terminator.
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        if self.line.len() > MAX_CHUNK_LINE_BYTES {
            return Err(ResponseError::Malformed);
        }
        Ok(Some((self.line.len(), lf + 1)))
    }
}

struct ParsedHead {
    status: u16,
    keep_alive: bool,
    body: Option<Body>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Parses a complete head: status line and header fields, ending with the blank line.
fn parse_head(head: &[u8]) -> Result<ParsedHead, ResponseError> {
    let text = std::str::from_utf8(head).map_err(|_| ResponseError::Malformed)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(ResponseError::Malformed)?;
    // RFC 9112 §4: HTTP-version SP status-code SP [reason-phrase]
    let (version, rest) = status_line.split_once(' ').ok_or(ResponseError::Malformed)?;
    let http_10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ResponseError::Malformed),
    };
    let code = rest.get(..3).ok_or(ResponseError::Malformed)?;
    if !code.bytes().all(|b| b.is_ascii_digit())
        || !matches!(rest.as_bytes().get(3), None | Some(b' '))
    {
        return Err(ResponseError::Malformed);
    }
    let status: u16 = code.parse().map_err(|_| ResponseError::Malformed)?;
    if status < 100 {
        return Err(ResponseError::Malformed);
    }

    let mut keep_alive = !http_10;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(ResponseError::Malformed)?;
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            // A list of identical values is allowed (RFC 9110 §8.6); differing ones are not.
            for item in value.split(',') {
                let item = item.trim_matches([' ', '\t']);
                if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ResponseError::Malformed);
                }
                let length: u64 = item.parse().map_err(|_| ResponseError::Malformed)?;
                if content_length.is_some_and(|seen| seen != length) {
                    return Err(ResponseError::Malformed);
                }
                content_length = Some(length);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the final coding (RFC 9112 §6.1); any other final coding
            // leaves the length to the close.
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim_matches([' ', '\t']).eq_ignore_ascii_case("chunked"));
            if !chunked {
                content_length = None;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(|option| option.trim_matches([' ', '\t'])) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") && http_10 {
                    keep_alive = true;
                }
            }
        }
    }
    let body = if chunked {
        Some(Body::Chunked(Chunked::SizeLine))
    } else {
        content_length.map(|remaining| Body::Length { remaining })
    };
    Ok(ParsedHead { status, keep_alive, body })
}

/// Parses `chunk-size [ chunk-ext ]` (RFC 9112 §7.1): hex digits, then optionally `;`
/// and extensions, which are ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ResponseError> {
    let digits_end = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(ResponseError::Malformed);
    }
    let rest_ok = rest.iter().all(|&b| b == b' ' || b == b'\t')
        || rest.iter().find(|&&b| b != b' ' && b != b'\t') == Some(&b';');
    if !rest_ok {
        return Err(ResponseError::Malformed);
    }
    let text = std::str::from_utf8(digits).map_err(|_| ResponseError::Malformed)?;
    u64::from_str_radix(text, 16).map_err(|_| ResponseError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces cut at `cuts` and returns the outcome plus how many bytes
    /// of the whole input the response used.
    fn feed_split(bytes: &[u8], cuts: &[usize]) -> Result<(Response, usize), ResponseError> {
        let mut parser = ResponseParser::default();
        let mut start = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(bytes.len());
        for end in bounds {
            match parser.feed(&bytes[start..end])? {
                Progress::NeedMore => start = end,
                Progress::Complete { response, consumed } => {
                    return Ok((response, start + consumed));
                }
            }
        }
        parser.finish().map(|response| (response, bytes.len()))
    }

    /// Every way of cutting `bytes` into two or three pieces gives the same result as one
    /// read.
    fn assert_split_invariant(bytes: &[u8]) -> Result<(Response, usize), ResponseError> {
        let whole = feed_split(bytes, &[]);
        for a in 0..=bytes.len() {
            assert_eq!(feed_split(bytes, &[a]), whole, "cut at {a}");
            for b in a..=bytes.len() {
                assert_eq!(feed_split(bytes, &[a, b]), whole, "cuts at {a}, {b}");
            }
        }
        whole
    }

    const LIGHTTPD_4B: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nETag: \"1\"\r\n\
        Content-Length: 4\r\nConnection: close\r\nServer: lighttpd/1.4.69\r\n\r\nabc\n";

    #[test]
    fn content_length_body_is_read_fully_however_the_reads_are_split() {
        let (response, used) = assert_split_invariant(LIGHTTPD_4B).unwrap();
        assert_eq!(response, Response { status: 200, body_bytes: 4, keep_alive: false });
        assert_eq!(used, LIGHTTPD_4B.len());
    }

    #[test]
    fn byte_at_a_time_reads_complete_on_the_last_body_byte() {
        let mut parser = ResponseParser::default();
        for (index, byte) in LIGHTTPD_4B.iter().enumerate() {
            let progress = parser.feed(std::slice::from_ref(byte)).unwrap();
            if index + 1 < LIGHTTPD_4B.len() {
                assert_eq!(progress, Progress::NeedMore, "byte {index}");
            } else {
                assert!(matches!(progress, Progress::Complete { consumed: 1, .. }));
            }
        }
    }

    #[test]
    fn bytes_after_the_response_are_not_consumed() {
        let mut bytes = LIGHTTPD_4B.to_vec();
        bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let (_, used) = feed_split(&bytes, &[]).unwrap();
        assert_eq!(used, LIGHTTPD_4B.len());
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers_is_decoded() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            4;name=value\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\
            Expires: never\r\n\r\n";
        let (response, used) = assert_split_invariant(bytes).unwrap();
        assert_eq!(response, Response { status: 200, body_bytes: 4 + 5 + 14, keep_alive: true });
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\n\r\n";
        let (response, used) = feed_split(bytes, &[]).unwrap();
        assert_eq!(response.body_bytes, 3);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn bad_chunk_framing_is_malformed() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        ] {
            assert_eq!(feed_split(bytes, &[]), Err(ResponseError::Malformed), "{bytes:?}");
        }
    }

    #[test]
    fn status_codes_other_than_200_are_reported_as_read() {
        let bytes = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found";
        let (response, _) = assert_split_invariant(bytes).unwrap();
        assert_eq!(response.status, 404);
        assert_eq!(response.body_bytes, 9);
    }

    #[test]
    fn bad_status_lines_are_malformed() {
        for bytes in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n",
        ] {
            assert_eq!(feed_split(bytes, &[]), Err(ResponseError::Malformed), "{bytes:?}");
        }
    }

    #[test]
    fn a_status_line_without_reason_phrase_is_accepted() {
        let (response, _) = feed_split(b"HTTP/1.1 204\r\n\r\n", &[]).unwrap();
        assert_eq!(response.status, 204);
        assert_eq!(response.body_bytes, 0);
    }

    #[test]
    fn short_body_is_truncated_not_success() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        for cut in 0..=bytes.len() {
            assert_eq!(feed_split(bytes, &[cut]), Err(ResponseError::Truncated), "cut at {cut}");
        }
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert_eq!(feed_split(chunked, &[]), Err(ResponseError::Truncated));
    }

    #[test]
    fn close_before_and_inside_the_head_are_told_apart() {
        assert_eq!(feed_split(b"", &[]), Err(ResponseError::NoResponse));
        assert_eq!(feed_split(b"HTTP/1.1 200 O", &[]), Err(ResponseError::Truncated));
    }

    #[test]
    fn body_without_length_runs_to_the_close_and_is_not_kept_alive() {
        let bytes = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nhello world";
        let (response, _) = assert_split_invariant(bytes).unwrap();
        assert_eq!(response, Response { status: 200, body_bytes: 11, keep_alive: false });
    }

    #[test]
    fn persistence_follows_version_and_connection_header() {
        let cases: [(&[u8], bool); 5] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            (b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n", false),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", true),
            (b"HTTP/1.1 200 OK\r\nconnection: upgrade, close\r\ncontent-length: 0\r\n\r\n", false),
        ];
        for (bytes, keep_alive) in cases {
            let (response, used) = feed_split(bytes, &[]).unwrap();
            assert_eq!(response.keep_alive, keep_alive, "{bytes:?}");
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn interim_responses_are_skipped() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (response, used) = assert_split_invariant(bytes).unwrap();
        assert_eq!((response.status, response.body_bytes, used), (200, 2, bytes.len()));
    }

    #[test]
    fn oversized_heads_are_rejected_without_unbounded_buffering() {
        let mut parser = ResponseParser::default();
        let filler = [b'a'; 1024];
        let mut outcome = parser.feed(b"HTTP/1.1 200 OK\r\nX: ");
        for _ in 0..=MAX_HEAD_BYTES / filler.len() {
            outcome = parser.feed(&filler);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(ResponseError::Malformed));
        assert!(parser.line.len() <= MAX_HEAD_BYTES + filler.len());
    }

    #[test]
    fn reset_parser_reads_the_next_response_on_a_kept_connection() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut parser = ResponseParser::default();
        for _ in 0..3 {
            let progress = parser.feed(response).unwrap();
            assert!(
                matches!(progress, Progress::Complete { consumed, .. } if consumed == response.len())
            );
            parser.reset();
            assert!(!parser.started());
        }
    }

    #[test]
    fn request_names_path_host_and_persistence() {
        let request = build_request("10.0.0.2:8080", "/index.html", false, &["X-Test: 1".into()]);
        assert_eq!(
            request,
            b"GET /index.html HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nUser-Agent: netpop-loadgen\r\n\
              Accept: */*\r\nConnection: close\r\nX-Test: 1\r\n\r\n"
        );
        let kept = build_request("h", "/", true, &[]);
        assert!(kept.windows(24).any(|w| w == b"Connection: keep-alive\r\n"));
    }
}
