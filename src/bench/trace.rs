//! The request trace every benchmark level replays, and the readers for trace files: plain text
//! or CSV, and libCacheSim's `oracleGeneral` binary format (optionally zstd-compressed).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::spec::TraceFormat;

/// A sequence of requests over objects numbered densely from 0, in order of first appearance.
///
/// Dense numbers let the references and the replay keep per-object state in plain vectors, which
/// is what makes a million-request replay take seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The object requested at each step.
    pub requests: Vec<u32>,
    /// Body bytes of each object, indexed by object number.
    pub sizes: Vec<u64>,
}

impl Trace {
    /// Number of distinct objects.
    pub fn objects(&self) -> usize {
        self.sizes.len()
    }

    /// The first `n` requests, with only the objects they reference (still numbered densely,
    /// since objects are numbered in order of first appearance).
    pub fn prefix(&self, n: usize) -> Trace {
        let requests = self.requests[..n.min(self.requests.len())].to_vec();
        let objects = requests.iter().map(|&o| o as usize + 1).max().unwrap_or(0);
        Trace {
            requests,
            sizes: self.sizes[..objects].to_vec(),
        }
    }
}

/// Turns external object names (ids, strings) into dense numbers while a trace is built.
#[derive(Debug)]
pub struct TraceBuilder<K> {
    index: HashMap<K, u32, ahash::RandomState>,
    trace: Trace,
}

impl<K: std::hash::Hash + Eq> Default for TraceBuilder<K> {
    fn default() -> Self {
        TraceBuilder {
            index: HashMap::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4)),
            trace: Trace::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq> TraceBuilder<K> {
    /// Appends a request for `name`. `size` is asked for only the first time an object is seen:
    /// an object keeps its first size for the whole trace (a later size change in a trace file is
    /// ignored, as the proxy would store one body per URL).
    pub fn push(&mut self, name: K, size: impl FnOnce() -> u64) {
        let next = self.trace.sizes.len() as u32;
        let id = *self.index.entry(name).or_insert(next);
        if id == next {
            self.trace.sizes.push(size().max(1));
        }
        self.trace.requests.push(id);
    }

    /// Requests pushed so far.
    pub fn len(&self) -> usize {
        self.trace.requests.len()
    }

    /// True before the first push.
    pub fn is_empty(&self) -> bool {
        self.trace.requests.is_empty()
    }

    /// The finished trace.
    pub fn finish(self) -> Trace {
        self.trace
    }
}

/// A trace file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("reading trace {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said (in the message, so not also reported as a cause).
        error: std::io::Error,
    },
    /// A line of a text trace is malformed.
    #[error("trace {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An oracleGeneral file whose length is not a whole number of 24-byte records.
    #[error("trace {path}: oracleGeneral data ends inside a record after {records} whole records ({extra} stray bytes); is it really oracleGeneral?")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Whole records read.
        records: usize,
        /// Bytes of the partial record.
        extra: usize,
    },
    /// The file holds no requests.
    #[error("trace {0} holds no requests")]
    Empty(PathBuf),
}

/// The zstd frame magic number, little-endian on disk.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Size of one oracleGeneral record: u32 timestamp, u64 object id, u32 size, i64 next access.
pub const ORACLE_RECORD: usize = 24;

/// Reads a trace file, at most `limit` requests of it. `default_size` gives the size of an
/// object whose line carries none (text traces only), by its dense number.
pub fn read_trace(
    path: &Path,
    format: TraceFormat,
    limit: Option<usize>,
    default_size: &dyn Fn(u32) -> u64,
) -> Result<Trace, TraceError> {
    let io = |error| TraceError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    // Peek for the zstd magic so a compressed file works whatever its name.
    let compressed = reader.fill_buf().map_err(io)?.starts_with(&ZSTD_MAGIC);
    let mut input: Box<dyn BufRead> = if compressed {
        let decoder = zstd::stream::read::Decoder::with_buffer(reader).map_err(io)?;
        Box::new(BufReader::with_capacity(1 << 20, decoder))
    } else {
        Box::new(reader)
    };
    let format = match format {
        TraceFormat::Auto => match guess_format(path) {
            // The name says nothing: a text trace never holds a NUL byte, while oracleGeneral
            // records almost always do (the high bytes of ids and sizes, next-access -1 aside).
            TraceFormat::Csv if input.fill_buf().map_err(io)?.contains(&0) => TraceFormat::Oracle,
            guessed => guessed,
        },
        f => f,
    };
    let trace = match format {
        TraceFormat::Oracle => read_oracle(input, path, limit)?,
        TraceFormat::Csv | TraceFormat::Auto => read_text(input, path, limit, default_size)?,
    };
    if trace.requests.is_empty() {
        return Err(TraceError::Empty(path.to_path_buf()));
    }
    Ok(trace)
}

fn guess_format(path: &Path) -> TraceFormat {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".zst").unwrap_or(&name);
    if name.ends_with(".oraclegeneral") || name.ends_with(".bin") || name.contains("oracle") {
        TraceFormat::Oracle
    } else {
        TraceFormat::Csv
    }
}

/// Reads oracleGeneral records. The timestamp and next-access fields are not used: the next
/// access is recomputed from the (possibly shortened) trace itself, so a trace cut by `limit`
/// still gets a correct Belady reference.
fn read_oracle(
    mut input: impl Read,
    path: &Path,
    limit: Option<usize>,
) -> Result<Trace, TraceError> {
    let mut builder = TraceBuilder::<u64>::default();
    let mut record = [0u8; ORACLE_RECORD];
    while limit.is_none_or(|l| builder.len() < l) {
        let mut filled = 0;
        while filled < ORACLE_RECORD {
            match input.read(&mut record[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(TraceError::Io {
                        path: path.to_path_buf(),
                        error,
                    })
                }
            }
        }
        if filled == 0 {
            break;
        }
        if filled < ORACLE_RECORD {
            return Err(TraceError::Truncated {
                path: path.to_path_buf(),
                records: builder.len(),
                extra: filled,
            });
        }
        let id = u64::from_le_bytes(record[4..12].try_into().expect("8 bytes"));
        let size = u32::from_le_bytes(record[12..16].try_into().expect("4 bytes"));
        // Some published traces carry size 0 for objects of unknown size; count them as 1 byte
        // so that they still occupy a slot.
        builder.push(id, || u64::from(size));
    }
    Ok(builder.finish())
}

/// Reads a text trace: one request per line, `key` or `key,size` (a comma, tab or spaces
/// between). Blank lines and lines starting with `#` are skipped, and so is a first line whose
/// size column is not a number (a CSV header).
fn read_text(
    input: impl BufRead,
    path: &Path,
    limit: Option<usize>,
    default_size: &dyn Fn(u32) -> u64,
) -> Result<Trace, TraceError> {
    let mut builder = TraceBuilder::<String>::default();
    for (index, line) in input.lines().enumerate() {
        if limit.is_some_and(|l| builder.len() >= l) {
            break;
        }
        let line = line.map_err(|error| TraceError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty());
        let key = fields.next().expect("a non-empty line has a field");
        let size = match fields.next() {
            None => None,
            Some(text) => match crate::units::parse_size(text) {
                Ok(n) => Some(n),
                Err(_) if index == 0 => continue, // a header such as `key,size`
                Err(_) => {
                    return Err(TraceError::Line {
                        path: path.to_path_buf(),
                        line: index + 1,
                        reason: format!("size {text:?} is not a number of bytes"),
                    })
                }
            },
        };
        let next = builder.trace.sizes.len() as u32;
        builder.push(key.to_string(), || {
            size.unwrap_or_else(|| default_size(next))
        });
    }
    Ok(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cachet-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn oracle_bytes(records: &[(u32, u64, u32, i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(ts, id, size, next) in records {
            out.extend_from_slice(&ts.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&next.to_le_bytes());
        }
        out
    }

    const RECORDS: [(u32, u64, u32, i64); 5] = [
        (1, 900, 100, 3),
        (2, 7, 2000, -1),
        (3, 900, 100, 4),
        (4, 900, 100, -1),
        (5, u64::MAX, 0, -1),
    ];

    fn expected() -> Trace {
        Trace {
            requests: vec![0, 1, 0, 0, 2],
            sizes: vec![100, 2000, 1],
        }
    }

    #[test]
    fn oracle_general_plain() {
        let path = temp_path("plain.oracleGeneral");
        std::fs::write(&path, oracle_bytes(&RECORDS)).unwrap();
        let trace = read_trace(&path, TraceFormat::Auto, None, &|_| 1).unwrap();
        assert_eq!(trace, expected());
        let first_two = read_trace(&path, TraceFormat::Oracle, Some(2), &|_| 1).unwrap();
        assert_eq!(first_two.requests, vec![0, 1]);
    }

    #[test]
    fn oracle_general_zstd() {
        // Named like a text file on purpose: compression and format come from the flags and
        // the magic number, not only from the name.
        let path = temp_path("compressed.trace");
        let packed = zstd::encode_all(&oracle_bytes(&RECORDS)[..], 3).unwrap();
        assert_eq!(&packed[..4], &ZSTD_MAGIC);
        std::fs::write(&path, packed).unwrap();
        let trace = read_trace(&path, TraceFormat::Oracle, None, &|_| 1).unwrap();
        assert_eq!(trace, expected());
        // And by name alone.
        let named = temp_path("t.oracleGeneral.zst");
        std::fs::copy(&path, &named).unwrap();
        assert_eq!(
            read_trace(&named, TraceFormat::Auto, None, &|_| 1).unwrap(),
            expected()
        );
    }

    #[test]
    fn oracle_general_is_recognised_by_content() {
        let path = temp_path("trace.dat");
        std::fs::write(&path, oracle_bytes(&RECORDS)).unwrap();
        let trace = read_trace(&path, TraceFormat::Auto, None, &|_| 1).unwrap();
        assert_eq!(trace.requests.len(), RECORDS.len());
    }

    #[test]
    fn oracle_general_truncated_is_an_error() {
        let path = temp_path("cut.bin");
        let mut bytes = oracle_bytes(&RECORDS);
        bytes.truncate(ORACLE_RECORD * 2 + 5);
        std::fs::write(&path, bytes).unwrap();
        let err = read_trace(&path, TraceFormat::Auto, None, &|_| 1).unwrap_err();
        assert!(
            matches!(
                err,
                TraceError::Truncated {
                    records: 2,
                    extra: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn csv_with_and_without_sizes() {
        let path = temp_path("t.csv");
        let mut f = File::create(&path).unwrap();
        writeln!(f, "key,size").unwrap();
        writeln!(f, "# a comment").unwrap();
        writeln!(f, "/a,100").unwrap();
        writeln!(f, "/b").unwrap();
        writeln!(f).unwrap();
        writeln!(f, "/a,999").unwrap();
        writeln!(f, "/c\t4KiB").unwrap();
        writeln!(f, "/b 7").unwrap();
        drop(f);
        let trace = read_trace(&path, TraceFormat::Auto, None, &|id| 10 + u64::from(id)).unwrap();
        assert_eq!(trace.requests, vec![0, 1, 0, 2, 1]);
        // /b had no size on first sight: default_size(1); /a keeps its first size.
        assert_eq!(trace.sizes, vec![100, 11, 4096]);
    }

    #[test]
    fn csv_bad_size_names_the_line_and_value() {
        let path = temp_path("bad.csv");
        std::fs::write(&path, "/a,1\n/b,lots\n").unwrap();
        let err = read_trace(&path, TraceFormat::Csv, None, &|_| 1).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("line 2") && text.contains("\"lots\""),
            "{text}"
        );
    }

    #[test]
    fn empty_and_missing_files() {
        let path = temp_path("empty.csv");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(
            read_trace(&path, TraceFormat::Auto, None, &|_| 1),
            Err(TraceError::Empty(_))
        ));
        let missing = temp_path("missing.csv");
        let err = read_trace(&missing, TraceFormat::Auto, None, &|_| 1).unwrap_err();
        assert!(err.to_string().contains("missing.csv"), "{err}");
    }

    #[test]
    fn prefix_keeps_only_referenced_objects() {
        let t = expected();
        let p = t.prefix(2);
        assert_eq!(p.requests, vec![0, 1]);
        assert_eq!(p.sizes, vec![100, 2000]);
    }
}
