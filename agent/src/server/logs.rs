//! CRI container log files as kubelet reads them for `/containerLogs`: the
//! line format `<RFC3339Nano> <stdout|stderr> <P|F> <msg>`, partial lines
//! joined per stream, and the `tailLines` / `sinceTime` / `timestamps` /
//! `limitBytes` options applied. No I/O here (see `log_file` for that).
//!
//! Upstream: kubernetes pkg/kubelet/kuberuntime/logs/logs.go.

use chrono::{DateTime, FixedOffset, Utc};

/// A line of a CRI log file that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("log line has too few fields: {0:?}")]
    Fields(String),
    #[error("log line has a bad timestamp {0:?}")]
    Timestamp(String),
    #[error("log line has an unknown stream {0:?}")]
    Stream(String),
}

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One parsed line of the log file (possibly a partial chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The timestamp exactly as written (RFC3339Nano).
    pub timestamp: &'a str,
    pub time: DateTime<FixedOffset>,
    pub stream: Stream,
    /// `P`: the message continues in the next entry of the same stream.
    pub partial: bool,
    pub message: &'a str,
}

/// Parses one line (without its trailing newline).
pub fn parse_line(line: &str) -> Result<Entry<'_>, ParseError> {
    let mut parts = line.splitn(4, ' ');
    let (Some(timestamp), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Fields(line.to_owned()));
    };
    // A message may be empty: "ts stdout F" has no fourth field.
    let message = parts.next().unwrap_or("");
    let time = DateTime::parse_from_rfc3339(timestamp)
        .map_err(|_| ParseError::Timestamp(timestamp.to_owned()))?;
    let stream = match stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        other => return Err(ParseError::Stream(other.to_owned())),
    };
    let partial = tag.split(':').next() == Some("P");
    Ok(Entry {
        timestamp,
        time,
        stream,
        partial,
        message,
    })
}

/// A complete log line: partial chunks of one stream joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The timestamp of the first chunk, as written.
    pub timestamp: String,
    pub time: DateTime<FixedOffset>,
    pub stream: Stream,
    pub text: String,
}

/// Joins partial entries into lines, separately for stdout and stderr.
#[derive(Debug, Default)]
pub struct Joiner {
    stdout: Option<Line>,
    stderr: Option<Line>,
}

impl Joiner {
    /// Feeds one raw file line; returns the completed line, if any. Lines
    /// that do not parse are skipped, as kubelet does.
    pub fn push(&mut self, raw: &str) -> Option<Line> {
        let entry = match parse_line(raw) {
            Ok(e) => e,
            Err(err) => {
                tracing::debug!(%err, "skipping a malformed log line");
                return None;
            }
        };
        let slot = match entry.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let line = match slot.take() {
            Some(mut pending) => {
                pending.text.push_str(entry.message);
                pending
            }
            None => Line {
                timestamp: entry.timestamp.to_owned(),
                time: entry.time,
                stream: entry.stream,
                text: entry.message.to_owned(),
            },
        };
        if entry.partial {
            *slot = Some(line);
            None
        } else {
            Some(line)
        }
    }

    /// Lines still waiting for their end (emitted as they are when the
    /// container has exited).
    pub fn flush(&mut self) -> Vec<Line> {
        let mut out: Vec<Line> = [self.stdout.take(), self.stderr.take()]
            .into_iter()
            .flatten()
            .collect();
        out.sort_by_key(|l| l.time);
        out
    }
}

/// The `/containerLogs` options (kubelet's `PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<DateTime<Utc>>,
    pub limit_bytes: Option<usize>,
}

/// A query parameter of `/containerLogs` that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid value {value:?} for query parameter {name:?}")]
pub struct OptionsError {
    pub name: &'static str,
    pub value: String,
}

fn flag(value: &str) -> bool {
    matches!(value, "true" | "1" | "")
}

impl LogOptions {
    /// Reads the options from query pairs; `now` anchors `sinceSeconds`.
    pub fn from_query(
        pairs: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<Self, OptionsError> {
        let mut o = LogOptions::default();
        let bad = |name: &'static str, value: &str| OptionsError {
            name,
            value: value.to_owned(),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "follow" => o.follow = flag(v),
                "previous" => o.previous = flag(v),
                "timestamps" => o.timestamps = flag(v),
                "tailLines" => {
                    let n: i64 = v.parse().map_err(|_| bad("tailLines", v))?;
                    // kubelet: a negative tail means all lines.
                    o.tail_lines = usize::try_from(n).ok();
                }
                "limitBytes" => {
                    let n: u64 = v.parse().map_err(|_| bad("limitBytes", v))?;
                    o.limit_bytes = Some(usize::try_from(n).unwrap_or(usize::MAX));
                }
                "sinceSeconds" => {
                    let n: i64 = v.parse().map_err(|_| bad("sinceSeconds", v))?;
                    o.since = Some(now - chrono::Duration::seconds(n.max(0)));
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(v).map_err(|_| bad("sinceTime", v))?;
                    o.since = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        Ok(o)
    }

    /// Whether a line passes the `since` filter.
    pub fn wanted(&self, line: &Line) -> bool {
        self.since.is_none_or(|s| line.time >= s)
    }

    /// The bytes written for a line.
    pub fn render(&self, line: &Line) -> String {
        if self.timestamps {
            format!("{} {}\n", line.timestamp, line.text)
        } else {
            format!("{}\n", line.text)
        }
    }
}

/// Splits `content` into complete raw lines; returns them and how many
/// bytes they span (a trailing line without newline is left for later).
pub fn complete_lines(content: &[u8]) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut consumed = 0;
    while let Some(pos) = content[consumed..].iter().position(|b| *b == b'\n') {
        let raw = &content[consumed..consumed + pos];
        lines.push(String::from_utf8_lossy(raw).into_owned());
        consumed += pos + 1;
    }
    (lines, consumed)
}

/// The lines of a whole file snapshot, joined and filtered by `since`, the
/// last `tail_lines` of them. Used for the first read; `follow` continues
/// from the returned joiner.
pub fn initial_lines(raw_lines: &[String], opts: &LogOptions, joiner: &mut Joiner) -> Vec<Line> {
    let mut lines: Vec<Line> = raw_lines
        .iter()
        .filter_map(|raw| joiner.push(raw))
        .filter(|l| opts.wanted(l))
        .collect();
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
}

/// Counts down `limitBytes` across writes.
#[derive(Debug)]
pub struct ByteLimit(Option<usize>);

impl ByteLimit {
    pub fn new(limit: Option<usize>) -> Self {
        Self(limit)
    }

    /// Cuts `chunk` to what may still be written.
    pub fn take(&mut self, mut chunk: String) -> String {
        if let Some(left) = self.0.as_mut() {
            if chunk.len() > *left {
                let mut cut = *left;
                while !chunk.is_char_boundary(cut) {
                    cut -= 1;
                }
                chunk.truncate(cut);
            }
            *left -= chunk.len();
        }
        chunk
    }

    pub fn exhausted(&self) -> bool {
        self.0 == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-01-02T03:04:05.000000001Z stdout F one\n\
2024-01-02T03:04:06.5Z stderr F two\n\
2024-01-02T03:04:07Z stdout P thr\n\
2024-01-02T03:04:07.1Z stderr F err-between\n\
2024-01-02T03:04:08Z stdout F ee\n\
2024-01-02T03:04:09Z stdout F\n";

    fn raw() -> Vec<String> {
        complete_lines(LOG.as_bytes()).0
    }

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn parses_fields_and_empty_messages() {
        let e = parse_line("2024-01-02T03:04:05.123456789Z stderr F a b  c").unwrap();
        assert_eq!(e.stream, Stream::Stderr);
        assert!(!e.partial);
        assert_eq!(e.message, "a b  c");
        assert_eq!(e.timestamp, "2024-01-02T03:04:05.123456789Z");
        let e = parse_line("2024-01-02T03:04:05Z stdout F").unwrap();
        assert_eq!(e.message, "");
        assert!(parse_line("garbage").is_err());
        assert!(matches!(
            parse_line("notatime stdout F x"),
            Err(ParseError::Timestamp(_))
        ));
    }

    #[test]
    fn partial_lines_join_per_stream() {
        let lines = initial_lines(&raw(), &LogOptions::default(), &mut Joiner::default());
        assert_eq!(
            texts(&lines),
            vec!["one", "two", "err-between", "three", ""]
        );
        // The joined line keeps the first chunk's timestamp.
        assert_eq!(lines[3].timestamp, "2024-01-02T03:04:07Z");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let opts = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        let lines = initial_lines(&raw(), &opts, &mut Joiner::default());
        assert_eq!(texts(&lines), vec!["three", ""]);
        let opts = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert!(initial_lines(&raw(), &opts, &mut Joiner::default()).is_empty());
    }

    #[test]
    fn since_drops_older_lines() {
        let now = "2024-01-02T03:04:10Z".parse::<DateTime<Utc>>().unwrap();
        let pairs = vec![("sinceSeconds".to_owned(), "4".to_owned())];
        let opts = LogOptions::from_query(&pairs, now).unwrap();
        let lines = initial_lines(&raw(), &opts, &mut Joiner::default());
        assert_eq!(texts(&lines), vec!["two", "err-between", "three", ""]);
        let pairs = vec![("sinceTime".to_owned(), "2024-01-02T03:04:07.05Z".to_owned())];
        let opts = LogOptions::from_query(&pairs, now).unwrap();
        let lines = initial_lines(&raw(), &opts, &mut Joiner::default());
        assert_eq!(texts(&lines), vec!["err-between", ""]);
    }

    #[test]
    fn timestamps_prefix_the_written_time() {
        let pairs = vec![("timestamps".to_owned(), "true".to_owned())];
        let opts = LogOptions::from_query(&pairs, Utc::now()).unwrap();
        let lines = initial_lines(&raw(), &opts, &mut Joiner::default());
        assert_eq!(
            opts.render(&lines[0]),
            "2024-01-02T03:04:05.000000001Z one\n"
        );
        assert_eq!(LogOptions::default().render(&lines[0]), "one\n");
    }

    #[test]
    fn query_parsing_rejects_bad_numbers() {
        let pairs = vec![("tailLines".to_owned(), "x".to_owned())];
        assert_eq!(
            LogOptions::from_query(&pairs, Utc::now()).unwrap_err().name,
            "tailLines"
        );
        let pairs = vec![
            ("follow".to_owned(), "true".to_owned()),
            ("tailLines".to_owned(), "-1".to_owned()),
            ("limitBytes".to_owned(), "10".to_owned()),
        ];
        let o = LogOptions::from_query(&pairs, Utc::now()).unwrap();
        assert!(o.follow);
        assert_eq!(o.tail_lines, None);
        assert_eq!(o.limit_bytes, Some(10));
    }

    #[test]
    fn incomplete_trailing_line_is_left_for_later() {
        let (lines, used) = complete_lines(b"a\nb\nc");
        assert_eq!(lines, vec!["a", "b"]);
        assert_eq!(used, 4);
    }

    #[test]
    fn byte_limit_cuts_across_writes() {
        let mut limit = ByteLimit::new(Some(5));
        assert_eq!(limit.take("abc\n".into()), "abc\n");
        assert_eq!(limit.take("def\n".into()), "d");
        assert!(limit.exhausted());
        assert_eq!(limit.take("x".into()), "");
    }

    #[test]
    fn flush_emits_unfinished_lines() {
        let mut j = Joiner::default();
        assert!(j.push("2024-01-02T03:04:07Z stdout P half").is_none());
        let rest = j.flush();
        assert_eq!(texts(&rest), vec!["half"]);
    }
}
