use std::sync::OnceLock;

use trackml::Detector;

/// The real TrackML detector, loaded once per test binary.
pub fn detector() -> &'static Detector {
    static DET: OnceLock<Detector> = OnceLock::new();
    DET.get_or_init(|| {
        let path = Detector::default_path()
            .expect("detectors.csv.gz not found: set EXATRKX_TRACKML_DIR to shared/data/trackml");
        Detector::load(&path).expect("detector loads")
    })
}

#[allow(dead_code)]
pub fn real_dir() -> std::path::PathBuf {
    detector().path.parent().unwrap().to_path_buf()
}

pub fn tmp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("trackml-test-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}
