//! `berth k8s`: the development registry in the current kube context's cluster.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use crate::k8s::settings::{Partial, Settings};
use crate::k8s::{apply, ha, need_local, render, rewrite};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: K8sCommand,
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Print the registry's Kubernetes objects as multi-document YAML (with --ha: a
    /// production registry of several replicas on PostgreSQL and S3).
    Render(Box<RenderArgs>),
    /// Deploy the registry into the cluster and print its address, localhost:NODE_PORT.
    Deploy(DeployArgs),
    /// Show the deployed registry: workload, address, volumes, pods.
    Status(SettingsArgs),
    /// Remove what `deploy` created (PersistentVolumeClaims are kept unless asked).
    Cleanup(CleanupArgs),
    /// Point image references in Kubernetes manifests at localhost:NODE_PORT.
    RewriteImages(RewriteArgs),
    /// Say whether the local registry is needed to use an image, and why.
    NeedLocal(NeedLocalArgs),
}

/// The `localRegistry` settings: a devspace.yaml, then flags for single keys.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// devspace.yaml-shaped file whose `localRegistry` section is read [default:
    /// ./devspace.yaml if it exists].
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// localRegistry.enabled
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enabled: Option<bool>,
    /// localRegistry.localbuild: build with the local Docker builder (no BuildKit sidecar).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub localbuild: Option<bool>,
    /// localRegistry.namespace [default: the current kube context's namespace].
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// localRegistry.name: of the Deployment/StatefulSet and Service [default: registry].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// localRegistry.image: the registry image [default: Berth's own image].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// localRegistry.buildKitImage [default: moby/buildkit:master-rootless].
    #[arg(long, value_name = "IMAGE")]
    pub buildkit_image: Option<String>,
    /// localRegistry.port: the port the registry listens on [default: 5000].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// localRegistry.persistence.enabled: a StatefulSet with a PersistentVolumeClaim.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub persistence: Option<bool>,
    /// localRegistry.persistence.size [default: 5Gi].
    #[arg(long, value_name = "SIZE")]
    pub persistence_size: Option<String>,
    /// localRegistry.persistence.storageClassName [default: the cluster's default].
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
}

impl SettingsArgs {
    fn flags(&self) -> Partial {
        Partial {
            enabled: self.enabled,
            localbuild: self.localbuild,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            build_kit_image: self.buildkit_image.clone(),
            port: self.port,
            persistence_enabled: self.persistence,
            persistence_size: self.persistence_size.clone(),
            persistence_storage_class_name: self.storage_class.clone(),
        }
    }

    /// The file's section (if any) overridden by the flags, unresolved.
    fn partial(&self) -> anyhow::Result<Partial> {
        let from_file = match &self.file {
            Some(f) => Partial::from_file(f)?,
            None if Path::new("devspace.yaml").is_file() => {
                Partial::from_file(Path::new("devspace.yaml"))?
            }
            None => Partial::default(),
        };
        Ok(from_file.overridden_by(&self.flags()))
    }

    /// Checks the file and flags before anything else: every value but the namespace's
    /// default (which may come from the cluster) is known without a cluster.
    fn precheck(&self) -> anyhow::Result<()> {
        self.partial()?.resolve(None).map(|_| ())
    }

    /// Resolved settings; `context_namespace` is the default namespace.
    fn settings(&self, context_namespace: Option<&str>) -> anyhow::Result<Settings> {
        self.partial()?.resolve(context_namespace)
    }
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(flatten)]
    pub ha: HaArgs,
}

/// `render --ha`: several stateless replicas on an external PostgreSQL and S3 bucket,
/// credentials from a Secret (keys metadata-url, s3-access-key-id, s3-secret-access-key
/// and optionally admin-password). Uses the namespace, name, image and port settings.
#[derive(Debug, Clone, clap::Args)]
pub struct HaArgs {
    /// Render the production registry: a Deployment of --replicas replicas, a
    /// PodDisruptionBudget and a Service.
    #[arg(long)]
    pub ha: bool,
    /// Number of replicas.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "ha")]
    pub replicas: i32,
    /// The Secret holding the credentials [default: <name>-config].
    #[arg(long, value_name = "NAME", requires = "ha")]
    pub secret: Option<String>,
    /// The S3 endpoint, e.g. https://minio.storage:9000 [default: AWS S3].
    #[arg(long, value_name = "URL", requires = "ha")]
    pub s3_endpoint: Option<String>,
    /// The bucket's region.
    #[arg(
        long,
        value_name = "REGION",
        default_value = "us-east-1",
        requires = "ha"
    )]
    pub s3_region: String,
    /// The bucket holding the blobs (required with --ha).
    #[arg(long, value_name = "BUCKET", requires = "ha")]
    pub s3_bucket: Option<String>,
    /// Answer blob pulls with a redirect to a presigned URL of the bucket.
    #[arg(long, requires = "ha")]
    pub s3_redirect: bool,
    /// The registry's public base URL, e.g. https://registry.example.com.
    #[arg(long, value_name = "URL", requires = "ha")]
    pub public_url: Option<String>,
    /// The Service's type: ClusterIP (behind an Ingress), LoadBalancer or NodePort.
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "ClusterIP",
        requires = "ha"
    )]
    pub service_type: String,
}

impl RenderArgs {
    fn ha_settings(&self, context_namespace: Option<&str>) -> anyhow::Result<ha::HaSettings> {
        let f = &self.settings;
        for (set, flag) in [
            (f.persistence.is_some(), "--persistence"),
            (f.persistence_size.is_some(), "--persistence-size"),
            (f.storage_class.is_some(), "--storage-class"),
            (f.localbuild.is_some(), "--localbuild"),
            (f.buildkit_image.is_some(), "--buildkit-image"),
        ] {
            if set {
                anyhow::bail!(
                    "{flag} has no meaning with --ha: the replicas keep no state of their own \
                     (blobs are in the bucket, the rest in PostgreSQL) and build nothing"
                );
            }
        }
        let s = f.settings(context_namespace)?;
        let h = &self.ha;
        let out = ha::HaSettings {
            secret: h
                .secret
                .clone()
                .unwrap_or_else(|| format!("{}-config", s.name)),
            namespace: s.namespace,
            name: s.name,
            image: s.image,
            port: s.port,
            replicas: h.replicas,
            s3_endpoint: h.s3_endpoint.clone().unwrap_or_default(),
            s3_region: h.s3_region.clone(),
            s3_bucket: h.s3_bucket.clone().unwrap_or_default(),
            s3_redirect: h.s3_redirect,
            public_url: h.public_url.clone(),
            service_type: h.service_type.clone(),
        };
        out.check()?;
        Ok(out)
    }
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Return once the NodePort is assigned, without waiting for the pod.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the NodePort and the pod (e.g. 90s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Take over fields of the registry's objects that another field manager owns.
    #[arg(long)]
    pub force_conflicts: bool,
}

#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Delete the PersistentVolumeClaims too (the registry's images are lost).
    #[arg(long)]
    pub delete_volumes: bool,
    /// Delete the namespace too, if `deploy` created it.
    #[arg(long)]
    pub delete_namespace: bool,
}

#[derive(Debug, clap::Args)]
pub struct RewriteArgs {
    /// The registry's NodePort (as `berth k8s deploy` prints it).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub node_port: u16,
    /// Rewrite only references to this image (repeatable; optionally with a tag or
    /// digest); every image when none is given.
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,
    /// Manifests to read (multi-document YAML); standard input when none, or `-`.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct NeedLocalArgs {
    /// The image reference to push, e.g. registry.example.com/team/app:dev.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// devspace.yaml-shaped file: its localRegistry.enabled decides when set.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// localRegistry.enabled
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enabled: Option<bool>,
    /// How long to wait for the registry's answer.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        K8sCommand::Render(r) => {
            // Fail on a bad file or flag before looking at the kube config.
            r.settings.precheck()?;
            let namespace = apply::context_namespace();
            let yaml = if r.ha.ha {
                ha::to_yaml(&ha::objects(&r.ha_settings(namespace.as_deref())?))?
            } else {
                render::to_yaml(&render::objects(
                    &r.settings.settings(namespace.as_deref())?,
                ))?
            };
            std::io::stdout().write_all(yaml.as_bytes())?;
            Ok(())
        }
        K8sCommand::Deploy(d) => {
            d.settings.precheck()?;
            let cluster = apply::connect().await?;
            let settings = d.settings.settings(Some(&cluster.namespace))?;
            if settings.enabled == Some(false) {
                anyhow::bail!(
                    "localRegistry.enabled is false: the local registry is switched off \
                     (pass --enabled to deploy it anyway)"
                );
            }
            let mut progress = apply::Progress::new();
            let opts = apply::DeployOptions {
                wait: !d.no_wait,
                timeout: d.timeout,
                force_conflicts: d.force_conflicts,
            };
            let deployed = apply::deploy(&cluster.client, &settings, &opts, &mut progress).await?;
            drop(progress);
            println!("{}", deployed.address);
            Ok(())
        }
        K8sCommand::Status(s) => {
            s.precheck()?;
            let cluster = apply::connect().await?;
            let settings = s.settings(Some(&cluster.namespace))?;
            let st = apply::status(&cluster.client, &settings).await?;
            for line in st.lines {
                println!("{line}");
            }
            Ok(())
        }
        K8sCommand::Cleanup(c) => {
            c.settings.precheck()?;
            let cluster = apply::connect().await?;
            let settings = c.settings.settings(Some(&cluster.namespace))?;
            let mut progress = apply::Progress::new();
            let opts = apply::CleanupOptions {
                delete_volumes: c.delete_volumes,
                delete_namespace: c.delete_namespace,
            };
            let removed = apply::cleanup(&cluster.client, &settings, &opts, &mut progress).await?;
            drop(progress);
            if removed.is_empty() {
                println!(
                    "nothing to remove: no registry named {} in namespace {}",
                    settings.name, settings.namespace
                );
            }
            for r in removed {
                println!("removed {r}");
            }
            Ok(())
        }
        K8sCommand::RewriteImages(r) => rewrite_images(r),
        K8sCommand::NeedLocal(n) => {
            let flags = Partial {
                enabled: n.enabled,
                ..Partial::default()
            };
            let from_file = match &n.file {
                Some(f) => Partial::from_file(f)?,
                None if Path::new("devspace.yaml").is_file() => {
                    Partial::from_file(Path::new("devspace.yaml"))?
                }
                None => Partial::default(),
            };
            let enabled = from_file.overridden_by(&flags).enabled;
            let context = apply::context_name();
            let files = need_local::auth_files_from_env();
            let answer = need_local::decide(&need_local::Inputs {
                reference: &n.reference,
                enabled,
                context: context.as_deref(),
                auth_files: &files,
                timeout: n.timeout,
            })
            .await?;
            println!("{answer}");
            Ok(())
        }
    }
}

fn rewrite_images(r: &RewriteArgs) -> anyhow::Result<()> {
    let rewriter = rewrite::Rewriter::new(r.node_port, &r.images)?;
    let mut inputs = Vec::new();
    let stdin_only = r.files.is_empty();
    if stdin_only {
        inputs.push(("standard input".to_string(), read_stdin()?));
    }
    for f in &r.files {
        if f.as_os_str() == "-" {
            inputs.push(("standard input".to_string(), read_stdin()?));
        } else {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            inputs.push((f.display().to_string(), text));
        }
    }
    let (out, report) =
        rewriter.rewrite_all(inputs.iter().map(|(n, t)| (n.clone(), t.as_str())))?;
    std::io::stdout().write_all(out.as_bytes())?;
    eprintln!(
        "rewrote {} image reference{} to localhost:{}",
        report.rewritten,
        if report.rewritten == 1 { "" } else { "s" },
        r.node_port
    );
    for u in report.unmatched {
        eprintln!("warning: --image {u} matched no image reference");
    }
    Ok(())
}

fn read_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading standard input")?;
    Ok(s)
}
