//! Node features and module ids, identical to `exatrkx.trackml.features` / `module_ids`.
use crate::detector::ModuleKind;
use crate::io::Event;

pub const NUM_FEATURES: usize = 9;

/// `(r/1000, phi/pi, z/1000)` computed in f64, stored f32 (docs/DESIGN.md).
fn cylindrical(x: f64, y: f64, z: f64) -> [f32; 3] {
    let r = (x * x + y * y).sqrt();
    let phi = y.atan2(x);
    [
        (r / 1000.0) as f32,
        (phi / std::f64::consts::PI) as f32,
        (z / 1000.0) as f32,
    ]
}

/// Row-major `[N, 9]`: the spacepoint, then its two strip clusters (or copies of itself).
pub fn node_features(event: &Event) -> Vec<f32> {
    let mut out = Vec::with_capacity(event.hits.len() * NUM_FEATURES);
    for h in &event.hits {
        let own = cylindrical(h.x, h.y, h.z);
        for _ in 0..3 {
            out.extend_from_slice(&own);
        }
    }
    if let Some(sp) = &event.spacepoints {
        let row_of = crate::io::hit_rows(&event.hits);
        for c in sp {
            // `read_event` refuses files naming unknown hits; in-memory events skip them.
            if let Some(&i) = row_of.get(&c.hit_id) {
                let row = &mut out[i * NUM_FEATURES..(i + 1) * NUM_FEATURES];
                row[3..6].copy_from_slice(&cylindrical(c.cl1[0], c.cl1[1], c.cl1[2]));
                row[6..9].copy_from_slice(&cylindrical(c.cl2[0], c.cl2[1], c.cl2[2]));
            }
        }
    }
    out
}

/// True when the event has strip spacepoints but no spacepoints file: their cluster columns
/// then copy the spacepoint (real TrackML files), which networks trained on the simulation's
/// clusters do not expect.
pub fn lacks_strip_clusters(event: &Event) -> bool {
    event.spacepoints.is_none()
        && event
            .hits
            .iter()
            .any(|h| ModuleKind::of_volume(h.volume_id).is_strip())
}

/// `volume_id * 100_000_000 + layer_id * 100_000 + module_id` per spacepoint.
pub fn module_ids(event: &Event) -> Vec<i64> {
    event
        .hits
        .iter()
        .map(|h| {
            h.volume_id as i64 * 100_000_000 + h.layer_id as i64 * 100_000 + h.module_id as i64
        })
        .collect()
}
