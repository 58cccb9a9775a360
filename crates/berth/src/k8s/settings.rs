//! DevSpace's `localRegistry` settings: the keys, their defaults, and where they come
//! from (a `devspace.yaml`-shaped file, then flags that override single keys).
//!
//! Every key is checked for its type and its value; an unknown key or a wrong value is an
//! error that names the key (`localRegistry.persistence.size: …`).

use std::path::Path;

use anyhow::{bail, Context};
use serde_norway::{Mapping, Value};

/// The key of the section in `devspace.yaml`.
pub const SECTION: &str = "localRegistry";
pub const DEFAULT_NAME: &str = "registry";
pub const DEFAULT_PORT: u16 = 5000;
pub const DEFAULT_BUILDKIT_IMAGE: &str = "moby/buildkit:master-rootless";
pub const DEFAULT_SIZE: &str = "5Gi";
/// Used when neither the settings nor the kube context name a namespace.
pub const FALLBACK_NAMESPACE: &str = "default";

/// Berth's own image, as `scripts/build-image.sh` tags it: the default `image`.
pub fn default_image() -> String {
    format!("ghcr.io/berth-registry/berth:{}", env!("CARGO_PKG_VERSION"))
}

/// The settings as written: every key optional. Used for the file's section and for the
/// flags that override it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partial {
    pub enabled: Option<bool>,
    pub localbuild: Option<bool>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub build_kit_image: Option<String>,
    pub port: Option<u16>,
    pub persistence_enabled: Option<bool>,
    pub persistence_size: Option<String>,
    pub persistence_storage_class_name: Option<String>,
}

/// The settings with every default applied and every value checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `None`: use the local registry only when pushing elsewhere is not allowed.
    pub enabled: Option<bool>,
    /// Build with the local Docker builder: no BuildKit sidecar.
    pub localbuild: bool,
    pub namespace: String,
    pub name: String,
    pub image: String,
    pub build_kit_image: String,
    pub port: u16,
    pub persistence: Persistence,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Persistence {
    pub enabled: bool,
    pub size: String,
    /// `None`: the cluster's default storage class.
    pub storage_class_name: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Partial::default()
            .resolve(None)
            .expect("defaults are valid")
    }
}

const KEYS: &[&str] = &[
    "enabled",
    "localbuild",
    "namespace",
    "name",
    "image",
    "buildKitImage",
    "port",
    "persistence",
];
const PERSISTENCE_KEYS: &[&str] = &["enabled", "size", "storageClassName"];

impl Partial {
    /// Reads the `localRegistry` section of a `devspace.yaml`-shaped file (a missing
    /// section means every default).
    pub fn from_file(path: &Path) -> anyhow::Result<Partial> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Partial::from_yaml(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of a `devspace.yaml`-shaped document.
    pub fn from_yaml(text: &str) -> anyhow::Result<Partial> {
        let doc: Value =
            serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("invalid YAML: {e}"))?;
        let section = match &doc {
            Value::Null => return Ok(Partial::default()),
            Value::Mapping(m) => match m.get(SECTION) {
                None | Some(Value::Null) => return Ok(Partial::default()),
                Some(Value::Mapping(s)) => s,
                Some(other) => bail!(
                    "{SECTION}: expected a mapping of settings, found {}",
                    describe(other)
                ),
            },
            other => bail!(
                "expected a mapping at the top of the file (like devspace.yaml), found {}",
                describe(other)
            ),
        };
        Partial::from_section(section)
    }

    fn from_section(section: &Mapping) -> anyhow::Result<Partial> {
        let mut p = Partial::default();
        for (k, v) in section {
            let key = key_name(k, SECTION)?;
            let path = format!("{SECTION}.{key}");
            match key {
                "enabled" => p.enabled = opt(v, &path, boolean)?,
                "localbuild" => p.localbuild = opt(v, &path, boolean)?,
                "namespace" => p.namespace = opt(v, &path, string)?,
                "name" => p.name = opt(v, &path, string)?,
                "image" => p.image = opt(v, &path, string)?,
                "buildKitImage" => p.build_kit_image = opt(v, &path, string)?,
                "port" => p.port = opt(v, &path, port)?,
                "persistence" => match v {
                    Value::Null => {}
                    Value::Mapping(m) => {
                        for (k, v) in m {
                            let key = key_name(k, &path)?;
                            let path = format!("{path}.{key}");
                            match key {
                                "enabled" => p.persistence_enabled = opt(v, &path, boolean)?,
                                "size" => p.persistence_size = opt(v, &path, string)?,
                                "storageClassName" => {
                                    p.persistence_storage_class_name = opt(v, &path, string)?
                                }
                                _ => bail!(
                                    "{path}: unknown key (the keys of {SECTION}.persistence are {})",
                                    PERSISTENCE_KEYS.join(", ")
                                ),
                            }
                        }
                    }
                    other => bail!(
                        "{path}: expected a mapping (enabled, size, storageClassName), found {}",
                        describe(other)
                    ),
                },
                _ => bail!(
                    "{path}: unknown key (the keys of {SECTION} are {})",
                    KEYS.join(", ")
                ),
            }
        }
        Ok(p)
    }

    /// `self` with every key that `over` sets replaced by `over`'s value.
    pub fn overridden_by(self, over: &Partial) -> Partial {
        Partial {
            enabled: over.enabled.or(self.enabled),
            localbuild: over.localbuild.or(self.localbuild),
            namespace: over.namespace.clone().or(self.namespace),
            name: over.name.clone().or(self.name),
            image: over.image.clone().or(self.image),
            build_kit_image: over.build_kit_image.clone().or(self.build_kit_image),
            port: over.port.or(self.port),
            persistence_enabled: over.persistence_enabled.or(self.persistence_enabled),
            persistence_size: over.persistence_size.clone().or(self.persistence_size),
            persistence_storage_class_name: over
                .persistence_storage_class_name
                .clone()
                .or(self.persistence_storage_class_name),
        }
    }

    /// Applies the defaults and checks every value. `context_namespace` is the current
    /// kube context's namespace, the default of `namespace`.
    pub fn resolve(self, context_namespace: Option<&str>) -> anyhow::Result<Settings> {
        let namespace = non_empty(self.namespace)
            .or_else(|| {
                context_namespace
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| FALLBACK_NAMESPACE.to_string());
        check_dns_label(&namespace, 63, false)
            .map_err(|e| anyhow::anyhow!("{SECTION}.namespace: `{namespace}` {e}"))?;

        let name = non_empty(self.name).unwrap_or_else(|| DEFAULT_NAME.to_string());
        // The StatefulSet's pods are `<name>-0` and carry a `controller-revision-hash`
        // label `<name>-<10 characters>`, which must fit a 63-character label value.
        check_dns_label(&name, 52, true)
            .map_err(|e| anyhow::anyhow!("{SECTION}.name: `{name}` {e}"))?;

        let image = non_empty(self.image).unwrap_or_else(default_image);
        super::reference::ImageRef::parse(&image)
            .map_err(|e| anyhow::anyhow!("{SECTION}.image: {e}"))?;
        let build_kit_image =
            non_empty(self.build_kit_image).unwrap_or_else(|| DEFAULT_BUILDKIT_IMAGE.to_string());
        super::reference::ImageRef::parse(&build_kit_image)
            .map_err(|e| anyhow::anyhow!("{SECTION}.buildKitImage: {e}"))?;

        let port = self.port.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            bail!("{SECTION}.port: must be from 1 to 65535, not 0");
        }

        let size = non_empty(self.persistence_size).unwrap_or_else(|| DEFAULT_SIZE.to_string());
        if !is_quantity(&size) {
            bail!(
                "{SECTION}.persistence.size: `{size}` is not a Kubernetes quantity (for example 5Gi, 500Mi, 10G)"
            );
        }
        let storage_class_name = non_empty(self.persistence_storage_class_name);
        if let Some(sc) = &storage_class_name {
            check_dns_subdomain(sc).map_err(|e| {
                anyhow::anyhow!("{SECTION}.persistence.storageClassName: `{sc}` {e}")
            })?;
        }
        Ok(Settings {
            enabled: self.enabled,
            localbuild: self.localbuild.unwrap_or(false),
            namespace,
            name,
            image,
            build_kit_image,
            port,
            persistence: Persistence {
                enabled: self.persistence_enabled.unwrap_or(false),
                size,
                storage_class_name,
            },
        })
    }
}

/// DevSpace treats an empty string as unset.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn key_name<'a>(k: &'a Value, parent: &str) -> anyhow::Result<&'a str> {
    match k {
        Value::String(s) => Ok(s),
        other => bail!("{parent}: keys must be strings, found {}", describe(other)),
    }
}

/// `null` means "not set", as in DevSpace.
fn opt<T>(
    v: &Value,
    path: &str,
    f: fn(&Value, &str) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    match v {
        Value::Null => Ok(None),
        v => f(v, path).map(Some),
    }
}

fn boolean(v: &Value, path: &str) -> anyhow::Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => bail!("{path}: expected true or false, found {}", describe(other)),
    }
}

fn string(v: &Value, path: &str) -> anyhow::Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => bail!("{path}: expected a string, found {}", describe(other)),
    }
}

fn port(v: &Value, path: &str) -> anyhow::Result<u16> {
    match v.as_u64() {
        Some(n @ 1..=65535) => Ok(n as u16),
        _ => bail!(
            "{path}: expected a port number from 1 to 65535, found {}",
            describe(v)
        ),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// RFC 1123 label (`lowercase letters, digits, '-'`); `alpha_first`: RFC 1035 (a Service
/// name must start with a letter).
pub(crate) fn check_dns_label(s: &str, max: usize, alpha_first: bool) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("must be 1 to {max} characters long"));
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let first = s.as_bytes()[0];
    let last = s.as_bytes()[s.len() - 1];
    if !ok_chars || first == b'-' || last == b'-' || (alpha_first && !first.is_ascii_lowercase()) {
        let start = if alpha_first {
            "a letter"
        } else {
            "a letter or digit"
        };
        return Err(format!(
            "is not a valid name: lowercase letters, digits and '-', starting with {start} and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters long".into());
    }
    for label in s.split('.') {
        check_dns_label(label, 63, false).map_err(|_| {
            "is not a valid name: lowercase letters, digits, '-' and '.'".to_string()
        })?;
    }
    Ok(())
}

/// A Kubernetes resource quantity: a number (no sign for sizes) and an optional suffix
/// (Ki Mi Gi Ti Pi Ei, k M G T P E, m, or an exponent e3/E3).
pub(crate) fn is_quantity(s: &str) -> bool {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let num_ok = !num.is_empty()
        && num != "."
        && num.matches('.').count() <= 1
        && num.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || ((suffix.starts_with('e') || suffix.starts_with('E'))
        && suffix.len() > 1
        && suffix[1..].bytes().all(|b| b.is_ascii_digit()));
    num_ok && suffix_ok && s != "0"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(yaml: &str) -> anyhow::Result<Settings> {
        Partial::from_yaml(yaml)?.resolve(None)
    }

    fn err(yaml: &str) -> String {
        format!("{:#}", resolve(yaml).expect_err("should be refused"))
    }

    #[test]
    fn defaults_are_devspaces() {
        let s = resolve("version: v2beta1\nname: app\n").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.enabled, None);
        assert!(!s.localbuild);
        assert_eq!(s.namespace, "default");
        assert_eq!(s.name, "registry");
        assert_eq!(s.image, default_image());
        assert_eq!(s.build_kit_image, "moby/buildkit:master-rootless");
        assert_eq!(s.port, 5000);
        assert!(!s.persistence.enabled);
        assert_eq!(s.persistence.size, "5Gi");
        assert_eq!(s.persistence.storage_class_name, None);
        // An empty file, an empty section and explicit nulls are all "defaults".
        assert_eq!(resolve("").unwrap(), s);
        assert_eq!(resolve("localRegistry:\n").unwrap(), s);
        assert_eq!(
            resolve("localRegistry: {name: null, persistence: null}\n").unwrap(),
            s
        );
    }

    #[test]
    fn namespace_defaults_to_the_context_namespace() {
        let p = Partial::from_yaml("localRegistry: {port: 5001}").unwrap();
        assert_eq!(p.clone().resolve(Some("dev")).unwrap().namespace, "dev");
        let p = Partial::from_yaml("localRegistry: {namespace: tools}").unwrap();
        assert_eq!(p.resolve(Some("dev")).unwrap().namespace, "tools");
    }

    #[test]
    fn reads_every_key() {
        let s = resolve(
            r#"
version: v2beta1
images:
  app: {image: ghcr.io/me/app}
localRegistry:
  enabled: true
  localbuild: true
  namespace: tools
  name: my-registry
  image: localhost:5000/berth:dev
  buildKitImage: moby/buildkit:v0.12.0-rootless
  port: 5050
  persistence:
    enabled: true
    size: 20Gi
    storageClassName: fast-ssd
"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Settings {
                enabled: Some(true),
                localbuild: true,
                namespace: "tools".into(),
                name: "my-registry".into(),
                image: "localhost:5000/berth:dev".into(),
                build_kit_image: "moby/buildkit:v0.12.0-rootless".into(),
                port: 5050,
                persistence: Persistence {
                    enabled: true,
                    size: "20Gi".into(),
                    storage_class_name: Some("fast-ssd".into()),
                },
            }
        );
    }

    #[test]
    fn flags_override_single_keys() {
        let file =
            Partial::from_yaml("localRegistry: {name: a, port: 6000, persistence: {size: 1Gi}}")
                .unwrap();
        let flags = Partial {
            port: Some(7000),
            persistence_enabled: Some(true),
            ..Partial::default()
        };
        let s = file.overridden_by(&flags).resolve(None).unwrap();
        assert_eq!(
            (
                s.name.as_str(),
                s.port,
                s.persistence.enabled,
                s.persistence.size.as_str()
            ),
            ("a", 7000, true, "1Gi")
        );
    }

    #[test]
    fn unknown_keys_name_the_key() {
        let e = err("localRegistry: {prot: 5000}");
        assert!(e.contains("localRegistry.prot: unknown key"), "{e}");
        assert!(e.contains("port"), "{e}");
        let e = err("localRegistry: {persistence: {sise: 1Gi}}");
        assert!(
            e.contains("localRegistry.persistence.sise: unknown key"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (yaml, key, found) in [
            (
                "localRegistry: {port: \"5000\"}",
                "localRegistry.port",
                "the string \"5000\"",
            ),
            (
                "localRegistry: {port: 70000}",
                "localRegistry.port",
                "the number 70000",
            ),
            (
                "localRegistry: {port: -1}",
                "localRegistry.port",
                "the number -1",
            ),
            (
                "localRegistry: {enabled: \"yes\"}",
                "localRegistry.enabled",
                "the string \"yes\"",
            ),
            (
                "localRegistry: {localbuild: 1}",
                "localRegistry.localbuild",
                "the number 1",
            ),
            ("localRegistry: {name: [a]}", "localRegistry.name", "a list"),
            (
                "localRegistry: {persistence: {enabled: 1}}",
                "localRegistry.persistence.enabled",
                "the number 1",
            ),
            (
                "localRegistry: {persistence: {size: 5}}",
                "localRegistry.persistence.size",
                "the number 5",
            ),
            (
                "localRegistry: {persistence: true}",
                "localRegistry.persistence",
                "the boolean true",
            ),
            ("localRegistry: [1]", "localRegistry", "a list"),
        ] {
            let e = err(yaml);
            assert!(e.contains(&format!("{key}: expected")), "{yaml}: {e}");
            assert!(e.contains(found), "{yaml}: {e}");
        }
    }

    #[test]
    fn wrong_values_name_the_key() {
        for (yaml, key) in [
            ("localRegistry: {port: 0}", "localRegistry.port"),
            ("localRegistry: {name: Registry}", "localRegistry.name"),
            ("localRegistry: {name: 1registry}", "localRegistry.name"),
            (
                "localRegistry: {name: a-very-long-name-that-does-not-fit-a-statefulset-pod-label}",
                "localRegistry.name",
            ),
            (
                "localRegistry: {namespace: my_ns}",
                "localRegistry.namespace",
            ),
            (
                "localRegistry: {image: 'Not An Image'}",
                "localRegistry.image",
            ),
            (
                "localRegistry: {buildKitImage: 'x@y'}",
                "localRegistry.buildKitImage",
            ),
            (
                "localRegistry: {persistence: {size: lots}}",
                "localRegistry.persistence.size",
            ),
            (
                "localRegistry: {persistence: {size: 5GB}}",
                "localRegistry.persistence.size",
            ),
            (
                "localRegistry: {persistence: {storageClassName: Fast_SSD}}",
                "localRegistry.persistence.storageClassName",
            ),
        ] {
            let e = err(yaml);
            assert!(e.starts_with(&format!("{key}: ")), "{yaml}: {e}");
        }
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        assert!(err("localRegistry: {port: 5000").contains("invalid YAML"));
        assert!(err("- a\n- b\n").contains("expected a mapping at the top"));
    }

    #[test]
    fn quantities() {
        for ok in ["5Gi", "500Mi", "1", "1.5Gi", "10G", "1e9", "100k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "0", "Gi", "5GB", "5 Gi", "-1Gi", "1..2", "5gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
