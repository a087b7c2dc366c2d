//! Borrowed views of the objects Triton passes to the entry points: the backend, a model and a
//! model instance. Triton owns them; the views are only valid during the entry-point call.
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::ptr;

use triton_sys as sys;

use crate::config::ModelConfig;
use crate::error::{check, get_string, string_from_c, Error, Result};

/// The backend API version this crate was built against (from the headers).
pub const API_VERSION: (u32, u32) = (
    sys::TRITONBACKEND_API_VERSION_MAJOR,
    sys::TRITONBACKEND_API_VERSION_MINOR,
);

/// The backend API version of the running server.
pub fn server_api_version() -> Result<(u32, u32)> {
    let (mut major, mut minor) = (0u32, 0u32);
    // SAFETY: both out-pointers are valid.
    check(
        unsafe { sys::TRITONBACKEND_ApiVersion(&mut major, &mut minor) },
        "TRITONBACKEND_ApiVersion",
    )?;
    Ok((major, minor))
}

/// Fail unless the server speaks a backend API this build can use: same major version and a
/// minor version at least the one of the headers.
pub fn check_api_version(server: (u32, u32)) -> Result<()> {
    if server.0 != API_VERSION.0 || server.1 < API_VERSION.1 {
        return Err(Error::unsupported(format!(
            "triton backend API version {}.{} does not support this backend, which needs {}.{} or \
             a later 1.x",
            server.0, server.1, API_VERSION.0, API_VERSION.1
        )));
    }
    Ok(())
}

/// The backend object (`TRITONBACKEND_Backend`).
pub struct BackendHandle<'a> {
    raw: *mut sys::TRITONBACKEND_Backend,
    _call: PhantomData<&'a ()>,
}

impl BackendHandle<'_> {
    /// # Safety
    /// `raw` is the live backend Triton passed to the current entry point.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_Backend) -> Self {
        Self {
            raw,
            _call: PhantomData,
        }
    }

    pub fn name(&self) -> Result<String> {
        // SAFETY: valid handle; the string lives as long as the backend.
        get_string("TRITONBACKEND_BackendName", |name| unsafe {
            sys::TRITONBACKEND_BackendName(self.raw, name)
        })
    }

    /// The backend's command-line settings, `--backend-config=<backend>,<key>=<value>`.
    pub fn cmdline(&self) -> Result<BTreeMap<String, String>> {
        let mut message = ptr::null_mut();
        // SAFETY: valid handle and out-pointer; the message stays Triton's (not deleted here).
        check(
            unsafe { sys::TRITONBACKEND_BackendConfig(self.raw, &mut message) },
            "TRITONBACKEND_BackendConfig",
        )?;
        // SAFETY: the message is live for the duration of this call.
        let json = unsafe { message_json(message) }?;
        #[derive(serde::Deserialize)]
        struct BackendConfig {
            #[serde(default)]
            cmdline: BTreeMap<String, String>,
        }
        serde_json::from_str::<BackendConfig>(&json)
            .map(|c| c.cmdline)
            .map_err(|e| Error::internal(format!("cannot read the backend configuration: {e}")))
    }
}

/// The JSON text of a message.
///
/// # Safety
/// `message` is a live `TRITONSERVER_Message`.
unsafe fn message_json(message: *mut sys::TRITONSERVER_Message) -> Result<String> {
    let mut base = ptr::null();
    let mut size = 0usize;
    check(
        sys::TRITONSERVER_MessageSerializeToJson(message, &mut base, &mut size),
        "TRITONSERVER_MessageSerializeToJson",
    )?;
    let bytes = if base.is_null() || size == 0 {
        &[][..]
    } else {
        // SAFETY: the buffer belongs to the message and holds `size` bytes.
        std::slice::from_raw_parts(base.cast::<u8>(), size)
    };
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// A model (`TRITONBACKEND_Model`).
pub struct Model<'a> {
    raw: *mut sys::TRITONBACKEND_Model,
    _call: PhantomData<&'a ()>,
}

impl Model<'_> {
    /// # Safety
    /// `raw` is a live model for the lifetime of the view.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_Model) -> Self {
        Self {
            raw,
            _call: PhantomData,
        }
    }

    pub(crate) fn raw(&self) -> *mut sys::TRITONBACKEND_Model {
        self.raw
    }

    pub fn name(&self) -> Result<String> {
        // SAFETY: valid handle; the string lives as long as the model.
        get_string("TRITONBACKEND_ModelName", |name| unsafe {
            sys::TRITONBACKEND_ModelName(self.raw, name)
        })
    }

    pub fn version(&self) -> Result<u64> {
        let mut version = 0u64;
        // SAFETY: valid handle and out-pointer.
        check(
            unsafe { sys::TRITONBACKEND_ModelVersion(self.raw, &mut version) },
            "TRITONBACKEND_ModelVersion",
        )?;
        Ok(version)
    }

    /// The model's folder in the (local) model repository, `<repository>/<model>`.
    pub fn repository_path(&self) -> Result<PathBuf> {
        let mut kind: sys::TRITONBACKEND_ArtifactType = 0;
        let mut location = ptr::null();
        // SAFETY: valid handle and out-pointers; the string lives as long as the model.
        check(
            unsafe { sys::TRITONBACKEND_ModelRepository(self.raw, &mut kind, &mut location) },
            "TRITONBACKEND_ModelRepository",
        )?;
        if kind != sys::TRITONBACKEND_ARTIFACT_FILESYSTEM {
            return Err(Error::unsupported(format!(
                "model artifacts of type {kind} are not supported, only a local filesystem"
            )));
        }
        Ok(PathBuf::from(unsafe { string_from_c(location) }))
    }

    /// The model version folder, `<repository>/<model>/<version>`.
    pub fn version_path(&self) -> Result<PathBuf> {
        Ok(self.repository_path()?.join(self.version()?.to_string()))
    }

    /// The model configuration as Triton's JSON text.
    pub fn config_json(&self) -> Result<String> {
        let mut message = ptr::null_mut();
        // SAFETY: version 1 is the only configuration format; we own the returned message.
        check(
            unsafe { sys::TRITONBACKEND_ModelConfig(self.raw, 1, &mut message) },
            "TRITONBACKEND_ModelConfig",
        )?;
        let message = Message(message);
        // SAFETY: `message` is ours and live until dropped after this call.
        unsafe { message_json(message.0) }
    }

    /// The model configuration, parsed.
    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_json(&self.config_json()?)
    }
}

/// An owned `TRITONSERVER_Message`, deleted on drop.
struct Message(*mut sys::TRITONSERVER_Message);

impl Drop for Message {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: we own the message; errors from deleting cannot be acted on.
            let err = unsafe { sys::TRITONSERVER_MessageDelete(self.0) };
            drop(unsafe { Error::from_raw(err) });
        }
    }
}

/// Where a model instance is placed (`instance_group.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceKind {
    Cpu,
    Gpu,
    /// The model decides its placement (`KIND_MODEL`).
    Model,
    Auto,
}

impl std::fmt::Display for InstanceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstanceKind::Cpu => "KIND_CPU",
            InstanceKind::Gpu => "KIND_GPU",
            InstanceKind::Model => "KIND_MODEL",
            InstanceKind::Auto => "KIND_AUTO",
        })
    }
}

/// A model instance (`TRITONBACKEND_ModelInstance`).
pub struct ModelInstance<'a> {
    raw: *mut sys::TRITONBACKEND_ModelInstance,
    _call: PhantomData<&'a ()>,
}

impl ModelInstance<'_> {
    /// # Safety
    /// `raw` is a live model instance for the lifetime of the view.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_ModelInstance) -> Self {
        Self {
            raw,
            _call: PhantomData,
        }
    }

    pub(crate) fn raw(&self) -> *mut sys::TRITONBACKEND_ModelInstance {
        self.raw
    }

    pub fn name(&self) -> Result<String> {
        // SAFETY: valid handle; the string lives as long as the instance.
        get_string("TRITONBACKEND_ModelInstanceName", |name| unsafe {
            sys::TRITONBACKEND_ModelInstanceName(self.raw, name)
        })
    }

    pub fn kind(&self) -> Result<InstanceKind> {
        let mut kind: sys::TRITONSERVER_InstanceGroupKind = 0;
        // SAFETY: valid handle and out-pointer.
        check(
            unsafe { sys::TRITONBACKEND_ModelInstanceKind(self.raw, &mut kind) },
            "TRITONBACKEND_ModelInstanceKind",
        )?;
        Ok(match kind {
            sys::TRITONSERVER_INSTANCEGROUPKIND_CPU => InstanceKind::Cpu,
            sys::TRITONSERVER_INSTANCEGROUPKIND_GPU => InstanceKind::Gpu,
            sys::TRITONSERVER_INSTANCEGROUPKIND_MODEL => InstanceKind::Model,
            _ => InstanceKind::Auto,
        })
    }

    /// The GPU of a `KIND_GPU` instance (meaningless for other kinds).
    pub fn device_id(&self) -> Result<i32> {
        let mut id = 0i32;
        // SAFETY: valid handle and out-pointer.
        check(
            unsafe { sys::TRITONBACKEND_ModelInstanceDeviceId(self.raw, &mut id) },
            "TRITONBACKEND_ModelInstanceDeviceId",
        )?;
        Ok(id)
    }

    /// The model this instance belongs to.
    pub fn model(&self) -> Result<Model<'_>> {
        let mut model = ptr::null_mut();
        // SAFETY: valid handle and out-pointer; the model outlives its instances.
        check(
            unsafe { sys::TRITONBACKEND_ModelInstanceModel(self.raw, &mut model) },
            "TRITONBACKEND_ModelInstanceModel",
        )?;
        Ok(unsafe { Model::from_raw(model) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_check_accepts_newer_minor_only() {
        let (major, minor) = API_VERSION;
        assert!(check_api_version((major, minor)).is_ok());
        assert!(check_api_version((major, minor + 3)).is_ok());
        let err = check_api_version((major, minor - 1)).unwrap_err();
        assert!(err.message().contains("backend API version"), "{err}");
        assert!(check_api_version((major + 1, 0)).is_err());
    }
}
