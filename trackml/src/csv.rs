//! A small, fast CSV reader/writer for the numeric TrackML tables (plain or gzip).
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// One table held as text plus the byte range of every field (row-major).
pub(crate) struct Table {
    path: PathBuf,
    text: String,
    header: Vec<String>,
    fields: Vec<(u32, u32)>,
    rows: usize,
}

/// Reads a whole file, decompressing it when the name ends in `.gz`.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let result = if gz {
        flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)).read_to_string(&mut text)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)
    };
    result.map_err(|e| Error::io(path, e))?;
    Ok(text)
}

impl Table {
    pub(crate) fn read(path: &Path) -> Result<Table> {
        Table::parse(path, read_text(path)?)
    }

    pub(crate) fn parse(path: &Path, text: String) -> Result<Table> {
        let mut lines = text.split('\n');
        let header: Vec<String> = lines
            .next()
            .unwrap_or("")
            .trim_end_matches('\r')
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        if header.len() < 2 {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                line: 1,
                message: "missing CSV header".into(),
            });
        }
        let ncols = header.len();
        let mut fields = Vec::with_capacity(ncols * (text.len() / 48 + 1));
        let mut rows = 0;
        let mut offset = text.find('\n').map_or(text.len(), |p| p + 1);
        for (i, line) in lines.enumerate() {
            let start = offset;
            offset += line.len() + 1;
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let mut n = 0;
            let mut pos = start;
            for field in line.split(',') {
                fields.push((pos as u32, (pos + field.len()) as u32));
                pos += field.len() + 1;
                n += 1;
            }
            if n != ncols {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    line: i + 2,
                    message: format!("{n} fields, the header has {ncols}"),
                });
            }
            rows += 1;
        }
        if text.len() > u32::MAX as usize {
            return Err(Error::Invalid(format!("{} is too large", path.display())));
        }
        Ok(Table {
            path: path.to_path_buf(),
            text,
            header,
            fields,
            rows,
        })
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.header.iter().any(|h| h == name)
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| Error::Parse {
                path: self.path.clone(),
                line: 1,
                message: format!("no column `{name}`"),
            })
    }

    /// Parses one column; integers written as `12.0` are not accepted for integer types.
    pub(crate) fn column<T: FromStr>(&self, name: &str) -> Result<Vec<T>> {
        let c = self.index(name)?;
        let ncols = self.header.len();
        (0..self.rows)
            .map(|r| {
                let (a, b) = self.fields[r * ncols + c];
                let s = self.text[a as usize..b as usize].trim();
                s.parse::<T>().map_err(|_| Error::Parse {
                    path: self.path.clone(),
                    line: r + 2,
                    message: format!("column `{name}`: cannot parse `{s}`"),
                })
            })
            .collect()
    }
}

/// Writes `text` to `path`, gzip-compressed when the name ends in `.gz`.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let result = if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        gz.write_all(text.as_bytes())
            .and_then(|_| gz.finish().map(|_| ()))
    } else {
        let mut w = std::io::BufWriter::new(file);
        w.write_all(text.as_bytes()).and_then(|_| w.flush())
    };
    result.map_err(|e| Error::io(path, e))
}
