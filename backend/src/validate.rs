//! The node features of a request checked against docs/DESIGN.md before the event reaches the
//! pipeline: every value finite, and the `(r/1000, phi/pi, z/1000)` columns within bounds that
//! no detector reaches. Features in the wrong units (mm instead of m, radians instead of
//! phi/pi, x/y/z instead of r/phi/z) are refused with a message naming the first value at
//! fault, instead of giving meaningless tracks.
use triton::{Error, Result};

use crate::settings::FEATURES;

/// `r/1000` lies in `[0, MAX_R]`: r = 10 m is beyond any tracking detector (ATLAS ITk and CMS
/// end near 1.1 m) and beyond the calorimeters, so only a unit error gets there.
pub const MAX_R: f32 = 10.0;
/// `|z/1000|` is at most `MAX_ABS_Z`: 30 m, beyond the half-length of any collider detector.
pub const MAX_ABS_Z: f32 = 30.0;
/// `|phi/pi|` may exceed 1 by rounding only (one f32 step is 1.2e-7).
pub const PHI_TOLERANCE: f32 = 1e-5;
/// Columns read as `(r, phi, z)` triples: the spacepoint and its two clusters. Wider models
/// (more columns of their own) get the finiteness check only beyond these.
pub const GEOMETRY_COLUMNS: usize = 9;

/// What column `col` holds, and its bounds.
fn column(col: usize) -> (&'static str, f32, f32) {
    let of = ["the spacepoint", "cluster 1", "cluster 2"][col / 3];
    match col % 3 {
        0 => (of, 0.0, MAX_R),
        1 => (of, -1.0 - PHI_TOLERANCE, 1.0 + PHI_TOLERANCE),
        _ => (of, -MAX_ABS_Z, MAX_ABS_Z),
    }
}

const QUANTITY: [&str; 3] = ["r/1000 (r in mm)", "phi/pi", "z/1000 (z in mm)"];
const SHOWN_BOUNDS: [&str; 3] = ["[0, 10]", "[-1, 1]", "[-30, 30]"];

/// Check row-major features `[n, width]`; the error names the first value at fault.
pub fn check_features(features: &[f32], width: usize) -> Result<()> {
    if width == 0 {
        return Ok(());
    }
    // Complete triples within the first nine columns.
    let geometry = width.min(GEOMETRY_COLUMNS) / 3 * 3;
    for (row, values) in features.chunks(width).enumerate() {
        for (col, &v) in values.iter().enumerate() {
            if !v.is_finite() {
                return Err(Error::invalid_arg(format!(
                    "invalid input: {FEATURES}[{row}, {col}] is not finite ({v})"
                )));
            }
            if col >= geometry {
                continue;
            }
            let (of, lo, hi) = column(col);
            if v < lo || v > hi {
                return Err(Error::invalid_arg(format!(
                    "invalid input: {FEATURES}[{row}, {col}] = {v} is outside {} for {} of {of}; \
                     the features are r/1000, phi/pi, z/1000 with r and z in mm \
                     (docs/DESIGN.md)",
                    SHOWN_BOUNDS[col % 3],
                    QUANTITY[col % 3],
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A plausible spacepoint: r 3 cm .. 1 m, any phi, |z| < 3 m, clusters alike.
    fn row() -> [f32; 9] {
        let own = [0.5, -0.25, 1.2];
        [
            own[0], own[1], own[2], own[0], own[1], own[2], 0.51, -0.26, 1.21,
        ]
    }

    #[test]
    fn plausible_features_and_their_extremes_pass() {
        let mut x: Vec<f32> = (0..4).flat_map(|_| row()).collect();
        x[0] = 0.0;
        x[1] = 1.0;
        x[10] = -1.0000001; // phi/pi one f32 step beyond -1 by rounding
        x[2] = -29.9;
        x[9] = 10.0;
        check_features(&x, 9).unwrap();
        check_features(&[], 9).unwrap();
    }

    #[test]
    fn units_errors_are_named_with_the_value_and_the_rule() {
        let cases = [
            (0, 320.0, "FEATURES[1, 0] = 320", "r/1000"), // r in mm
            (1, 3.1, "FEATURES[1, 1] = 3.1", "phi/pi"),   // phi in radians
            (2, -1500.0, "FEATURES[1, 2] = -1500", "[-30, 30]"), // z in mm
            (0, -0.2, "FEATURES[1, 0] = -0.2", "of the spacepoint"), // x, not r
            (7, 1.5, "FEATURES[1, 7] = 1.5", "cluster 2"),
        ];
        for (col, value, at, rule) in cases {
            let mut x: Vec<f32> = (0..3).flat_map(|_| row()).collect();
            x[9 + col] = value;
            let err = check_features(&x, 9).unwrap_err();
            assert_eq!(err.code(), triton::ErrorCode::InvalidArg);
            assert!(err.message().contains(at), "{err}");
            assert!(err.message().contains(rule), "{err}");
        }
    }

    #[test]
    fn non_finite_values_are_named_first_in_row_order() {
        let mut x: Vec<f32> = (0..3).flat_map(|_| row()).collect();
        x[13] = f32::NAN;
        x[20] = f32::INFINITY;
        let err = check_features(&x, 9).unwrap_err().to_string();
        assert_eq!(err, "invalid input: FEATURES[1, 4] is not finite (NaN)");
        x[13] = 0.1;
        let err = check_features(&x, 9).unwrap_err().to_string();
        assert!(err.contains("FEATURES[2, 2] is not finite (inf)"), "{err}");
    }

    #[test]
    fn columns_beyond_the_geometry_are_only_checked_for_finiteness() {
        // Width 4: (r, phi, z) and a column of the model's own.
        let x = [0.1, 0.2, 0.3, 250.0, 0.1, 0.2, 0.3, -7.0];
        check_features(&x, 4).unwrap();
        assert!(check_features(&[0.1, 0.2, 0.3, f32::NAN], 4).is_err());
        // Width 2: no complete triple.
        check_features(&[250.0, -7.0], 2).unwrap();
    }

    /// Values across and beyond every bound, with NaN and infinities.
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            -2.0f32..2.0,
            -40.0f32..40.0,
            Just(1.0 + PHI_TOLERANCE),
            Just(MAX_R),
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            any::<f32>(),
        ]
    }

    proptest! {
        #[test]
        fn refused_exactly_when_a_value_breaks_a_rule(
            width in 1usize..13,
            values in prop::collection::vec(value(), 0..60),
        ) {
            let n = values.len() / width * width;
            let x = &values[..n];
            let geometry = width.min(9) / 3 * 3;
            let first_bad = x.iter().enumerate().position(|(i, &v)| {
                let col = i % width;
                !v.is_finite() || (col < geometry && {
                    let (_, lo, hi) = column(col);
                    !(lo..=hi).contains(&v)
                })
            });
            match (check_features(x, width), first_bad) {
                (Ok(()), None) => {}
                (Err(e), Some(i)) => {
                    let at = format!("FEATURES[{}, {}]", i / width, i % width);
                    prop_assert!(e.message().contains(&at), "{} does not name {}", e, at);
                }
                (result, bad) => prop_assert!(false, "{:?} but first bad value {:?}", result, bad),
            }
        }
    }
}
