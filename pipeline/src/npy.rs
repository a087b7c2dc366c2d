//! Just enough of the `.npy` format for feature, module-id and label files: little-endian
//! `f4`/`i8` arrays in C order (what `numpy.save` writes for float32 and int64).
use std::io::{Error, ErrorKind, Read, Result, Write};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element types this module reads and writes.
pub trait NpyElement: Copy {
    const DESCR: &'static str;
    fn from_le(bytes: &[u8]) -> Self;
    fn to_le(self) -> Vec<u8>;
}

impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn to_le(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}

impl NpyElement for i64 {
    const DESCR: &'static str = "<i8";
    fn from_le(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        i64::from_le_bytes(a)
    }
    fn to_le(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}

fn invalid(path: &Path, what: String) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// The value of `'key':` in the header dict, up to the next `,` or `}` (or `)` for the shape).
fn header_field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Read an array: its shape and its elements in C order.
pub fn read<T: NpyElement>(path: &Path) -> Result<(Vec<usize>, Vec<T>)> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(invalid(path, "not an .npy file".into()));
    }
    let (header_len, offset) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(invalid(path, format!("unsupported .npy version {v}"))),
    };
    let data_start = offset + header_len;
    let header = bytes
        .get(offset..data_start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| invalid(path, "truncated header".into()))?;
    let descr = header_field(header, "descr")
        .unwrap_or("")
        .trim_matches(['\'', '"']);
    if descr != T::DESCR {
        return Err(invalid(
            path,
            format!("dtype '{descr}', expected '{}'", T::DESCR),
        ));
    }
    if header_field(header, "fortran_order") != Some("False") {
        return Err(invalid(path, "only C-order arrays are supported".into()));
    }
    let shape_text = header_field(header, "shape").unwrap_or("");
    let shape: Vec<usize> = shape_text
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| invalid(path, format!("bad shape {shape_text}")))?;
    let count: usize = shape.iter().product();
    let size = std::mem::size_of::<T>();
    let data = bytes
        .get(data_start..data_start + count * size)
        .ok_or_else(|| invalid(path, format!("holds fewer than {count} elements")))?;
    Ok((shape, data.chunks_exact(size).map(T::from_le).collect()))
}

/// Write an array of `shape` (C order).
pub fn write<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape does not match the data"
    );
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        T::DESCR
    );
    // Pad so that the data starts on a 64-byte boundary, header ending in a newline.
    while !(MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + data.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in data {
        out.extend_from_slice(&v.to_le());
    }
    std::fs::File::create(path)?.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let dir = std::env::temp_dir().join(format!("npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        write(&path, &[4, 3], &data).unwrap();
        let (shape, back) = read::<f32>(&path).unwrap();
        assert_eq!((shape, back), (vec![4, 3], data));
        let labels = vec![-1i64, 0, 7];
        write(&path, &[3], &labels).unwrap();
        assert_eq!(read::<i64>(&path).unwrap(), (vec![3], labels));
        let err = read::<f32>(&path).unwrap_err().to_string();
        assert!(err.contains("dtype '<i8'"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
