//! Tensor data types, element types that may be read from inputs and written to outputs, and
//! shape arithmetic that refuses to overflow.
use std::fmt;

use triton_sys as sys;

use crate::error::{Error, Result};

/// Triton's tensor data types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
    Bf16,
}

const ALL: [(DataType, &str, sys::TRITONSERVER_DataType, usize); 14] = [
    (DataType::Bool, "BOOL", sys::TRITONSERVER_TYPE_BOOL, 1),
    (DataType::Uint8, "UINT8", sys::TRITONSERVER_TYPE_UINT8, 1),
    (DataType::Uint16, "UINT16", sys::TRITONSERVER_TYPE_UINT16, 2),
    (DataType::Uint32, "UINT32", sys::TRITONSERVER_TYPE_UINT32, 4),
    (DataType::Uint64, "UINT64", sys::TRITONSERVER_TYPE_UINT64, 8),
    (DataType::Int8, "INT8", sys::TRITONSERVER_TYPE_INT8, 1),
    (DataType::Int16, "INT16", sys::TRITONSERVER_TYPE_INT16, 2),
    (DataType::Int32, "INT32", sys::TRITONSERVER_TYPE_INT32, 4),
    (DataType::Int64, "INT64", sys::TRITONSERVER_TYPE_INT64, 8),
    (DataType::Fp16, "FP16", sys::TRITONSERVER_TYPE_FP16, 2),
    (DataType::Fp32, "FP32", sys::TRITONSERVER_TYPE_FP32, 4),
    (DataType::Fp64, "FP64", sys::TRITONSERVER_TYPE_FP64, 8),
    (DataType::Bytes, "BYTES", sys::TRITONSERVER_TYPE_BYTES, 0),
    (DataType::Bf16, "BF16", sys::TRITONSERVER_TYPE_BF16, 2),
];

impl DataType {
    /// The name used on the wire (`FP32`).
    pub fn name(self) -> &'static str {
        ALL.iter().find(|e| e.0 == self).map(|e| e.1).unwrap()
    }

    /// Bytes per element; 0 for `BYTES` (variable size).
    pub fn byte_size(self) -> usize {
        ALL.iter().find(|e| e.0 == self).map(|e| e.3).unwrap()
    }

    pub(crate) fn to_raw(self) -> sys::TRITONSERVER_DataType {
        ALL.iter().find(|e| e.0 == self).map(|e| e.2).unwrap()
    }

    pub(crate) fn from_raw(raw: sys::TRITONSERVER_DataType) -> Option<Self> {
        ALL.iter().find(|e| e.2 == raw).map(|e| e.0)
    }

    /// Parse a wire name (`FP32`) or a model configuration name (`TYPE_FP32`).
    pub fn parse(text: &str) -> Option<Self> {
        let name = text.strip_prefix("TYPE_").unwrap_or(text);
        // The model configuration spells the variable-size type TYPE_STRING.
        let name = if name == "STRING" { "BYTES" } else { name };
        ALL.iter().find(|e| e.1 == name).map(|e| e.0)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Plain element types whose bytes may be copied to and from tensor buffers.
///
/// # Safety
/// Implementors are `Copy`, have no padding, and every bit pattern is a valid value.
pub unsafe trait Element: Copy + Default + 'static {
    const DATA_TYPE: DataType;
}

unsafe impl Element for f32 {
    const DATA_TYPE: DataType = DataType::Fp32;
}
unsafe impl Element for f64 {
    const DATA_TYPE: DataType = DataType::Fp64;
}
unsafe impl Element for i32 {
    const DATA_TYPE: DataType = DataType::Int32;
}
unsafe impl Element for i64 {
    const DATA_TYPE: DataType = DataType::Int64;
}
unsafe impl Element for u8 {
    const DATA_TYPE: DataType = DataType::Uint8;
}

/// The bytes of a slice of elements.
pub(crate) fn as_bytes<T: Element>(data: &[T]) -> &[u8] {
    // SAFETY: `Element` types are plain data without padding.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), std::mem::size_of_val(data)) }
}

/// The bytes of a mutable slice of elements; any bytes written form valid elements.
pub(crate) fn as_bytes_mut<T: Element>(data: &mut [T]) -> &mut [u8] {
    // SAFETY: `Element` types accept every bit pattern and have no padding.
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast(), std::mem::size_of_val(data)) }
}

/// Number of elements of a tensor shape; negative dimensions and overflow are errors.
pub fn element_count(shape: &[i64]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d)
            .map_err(|_| Error::invalid_arg(format!("shape {shape:?} has a negative dimension")))?;
        acc.checked_mul(d)
            .ok_or_else(|| Error::invalid_arg(format!("shape {shape:?} is too large")))
    })
}

/// Bytes of a tensor of `dtype` and `shape`, with overflow checked.
pub fn tensor_byte_size(dtype: DataType, shape: &[i64]) -> Result<usize> {
    element_count(shape)?
        .checked_mul(dtype.byte_size())
        .ok_or_else(|| Error::invalid_arg(format!("shape {shape:?} of {dtype} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_both_spellings() {
        assert_eq!(DataType::parse("FP32"), Some(DataType::Fp32));
        assert_eq!(DataType::parse("TYPE_INT64"), Some(DataType::Int64));
        assert_eq!(DataType::parse("TYPE_STRING"), Some(DataType::Bytes));
        assert_eq!(DataType::parse("FLOAT"), None);
        for (dt, name, raw, _) in ALL {
            assert_eq!(dt.name(), name);
            assert_eq!(DataType::from_raw(raw), Some(dt));
            assert_eq!(DataType::parse(name), Some(dt));
        }
    }

    #[test]
    fn byte_sizes_follow_the_element_size_not_an_enum_size() {
        assert_eq!(tensor_byte_size(DataType::Fp32, &[10, 9]).unwrap(), 360);
        assert_eq!(tensor_byte_size(DataType::Int64, &[2, 7]).unwrap(), 112);
        assert_eq!(tensor_byte_size(DataType::Fp32, &[0, 9]).unwrap(), 0);
        assert_eq!(element_count(&[]).unwrap(), 1);
    }

    #[test]
    fn negative_or_huge_shapes_are_errors() {
        assert!(element_count(&[-1, 9]).is_err());
        assert!(element_count(&[i64::MAX, 4]).is_err());
        assert!(tensor_byte_size(DataType::Fp64, &[1 << 61, 1]).is_err());
    }

    #[test]
    fn bytes_view_matches_the_elements() {
        let mut v = vec![0f32; 2];
        as_bytes_mut(&mut v).copy_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]);
        assert_eq!(v, [1.0, 2.0]);
        assert_eq!(as_bytes(&[1i64]), 1i64.to_ne_bytes());
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn byte_sizes_are_exact_or_refused(
            shape in prop::collection::vec(
                prop_oneof![-3i64..64, any::<i64>(), Just(i64::MAX), Just(i64::MIN)], 0..5),
            pick in 0..ALL.len(),
        ) {
            let dtype = ALL[pick].0;
            // The exact product in 128-bit arithmetic (saturating: only "too large" matters),
            // and the largest partial product: the count refuses any overflow on the way.
            let mut largest = 1i128;
            let exact = shape.iter().try_fold(1i128, |acc, &d| {
                let next = (d >= 0).then(|| acc.saturating_mul(d as i128));
                largest = largest.max(next.unwrap_or(0));
                next
            });
            match (element_count(&shape), exact) {
                (Ok(n), Some(e)) => prop_assert_eq!(n as i128, e),
                (Err(_), None) => {}
                (Err(_), Some(_)) => prop_assert!(largest > usize::MAX as i128),
                (Ok(n), None) => prop_assert!(false, "{shape:?} counted {n}"),
            }
            match (tensor_byte_size(dtype, &shape), exact) {
                (Ok(b), Some(e)) => prop_assert_eq!(b as i128, e * dtype.byte_size() as i128),
                (Err(e), _) => prop_assert_eq!(e.code(), crate::ErrorCode::InvalidArg),
                (Ok(b), None) => prop_assert!(false, "{shape:?} sized {b}"),
            }
        }
    }
}
