//! Writes the node features (f32, row-major [N, 9]) and module ids (i64) of one event as raw
//! little-endian files, for the Python cross-check.
//! `dump_features EVENT_DIR EVENT_ID OUT_PREFIX` writes OUT_PREFIX.features.f32 and .module_ids.i64
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: dump_features EVENT_DIR EVENT_ID OUT_PREFIX".into());
    }
    let event = trackml::io::read_event(std::path::Path::new(&args[1]), args[2].parse()?)?;
    let x = trackml::features::node_features(&event);
    let ids = trackml::features::module_ids(&event);
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(format!("{}.features.f32", args[3]), bytes)?;
    let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(format!("{}.module_ids.i64", args[3]), bytes)?;
    Ok(())
}
