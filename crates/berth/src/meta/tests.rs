//! One behaviour suite for every metadata engine: each test below runs once on SQLite
//! and once on PostgreSQL (`meta::tests::<name>::sqlite` / `::postgres`), so the two
//! can't drift apart.
//!
//! PostgreSQL tests need a server: `BERTH_TEST_POSTGRES_URL` (a superuser URL, e.g.
//! from `tests/services/start.sh`); each test creates its own database and drops it
//! afterwards. Without the variable they are skipped loudly, unless
//! `BERTH_TEST_REQUIRE_SERVICES=1`, which makes them fail.
//!
//! "Replicas" are second handles on the same database: another pool for PostgreSQL,
//! another `SqliteMetadata` on the same file for SQLite (as a CLI command next to the
//! server would be).

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci::{Digest, RepoName, Tag};
use sqlx::Connection;
use uuid::Uuid;

use super::accounts::{AccountKind, Accounts, AuditEntry, Created, MemberChange, Role};
use super::gc::{GcReport, GcStore, Retained, RetentionRule};
use super::postgres::PostgresMetadata;
use super::sqlite::SqliteMetadata;
use super::{now_ms, Linked, Metadata, NewManifest, Presence, PutManifest, TagFilter};

// ---------------------------------------------------------------------------------------
// Engines

/// One engine's three stores over one database.
#[derive(Clone)]
struct Db {
    meta: Arc<dyn Metadata>,
    accounts: Arc<dyn Accounts>,
    gc: Arc<dyn GcStore>,
    place: Arc<Place>,
}

enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

impl Db {
    fn of<T: Metadata + Accounts + GcStore>(m: T, place: Arc<Place>) -> Db {
        let m = Arc::new(m);
        Db {
            meta: m.clone(),
            accounts: m.clone(),
            gc: m,
            place,
        }
    }

    async fn sqlite() -> Option<Db> {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMetadata::open(&dir.path().join("berth.db"))
            .await
            .unwrap();
        Some(Db::of(m, Arc::new(Place::Sqlite(dir))))
    }

    async fn postgres() -> Option<Db> {
        let pg = PgDatabase::create().await?;
        let m = PostgresMetadata::open(&pg.url, 8).await.unwrap();
        Some(Db::of(m, Arc::new(Place::Postgres(pg))))
    }

    /// Another process on the same database.
    async fn replica(&self) -> Db {
        match &*self.place {
            Place::Sqlite(dir) => Db::of(
                SqliteMetadata::open(&dir.path().join("berth.db"))
                    .await
                    .unwrap(),
                self.place.clone(),
            ),
            Place::Postgres(pg) => Db::of(
                PostgresMetadata::open(&pg.url, 8).await.unwrap(),
                self.place.clone(),
            ),
        }
    }
}

/// A database of its own on the test server, dropped with this value.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

/// The test server's URL, or `None` (skip) when it isn't configured and not required.
pub(crate) fn postgres_test_url() -> Option<String> {
    match std::env::var("BERTH_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("BERTH_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("BERTH_TEST_REQUIRE_SERVICES=1 but BERTH_TEST_POSTGRES_URL is not set (tests/services/start.sh)")
        }
        _ => {
            eprintln!(
                "SKIPPED: a PostgreSQL test, BERTH_TEST_POSTGRES_URL is not set \
                 (start one with tests/services/start.sh, then source its env file)"
            );
            None
        }
    }
}

/// `url` with its database name replaced.
pub(crate) fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let base = if rest.contains('/') {
        base.rsplit_once('/').unwrap().0
    } else {
        base
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl PgDatabase {
    async fn create() -> Option<PgDatabase> {
        let admin_url = postgres_test_url()?;
        let name = format!("berth_t_{}", Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connecting to BERTH_TEST_POSTGRES_URL");
        create_database(&mut c, &name).await;
        let url = with_database(&admin_url, &name);
        Some(PgDatabase {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: drop the database from a thread of its
        // own. FORCE closes the test's pools still connected.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            })
        })
        .join();
    }
}

/// Every test in both engines: `name::sqlite` and `name::postgres`.
macro_rules! engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(db) = super::Db::sqlite().await {
                    super::$name(db).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::Db::postgres().await {
                    super::$name(db).await
                }
            }
        }
    )*};
}

engines!(
    links_and_vanished_blobs,
    uploads,
    manifests_references_and_tags,
    tags_page_in_byte_order,
    catalog_pages_in_byte_order_within_namespaces,
    repositories_with_counts,
    tag_details_sizes_filters_and_total,
    delete_repository_takes_everything_but_blobs,
    referrers,
    users,
    teams_and_members,
    tokens,
    sessions,
    audit_log,
    login_failures_are_shared_by_replicas,
    login_failures_racing_on_replicas_are_all_counted,
    account_delete_deletes_the_namespace,
    gc_lease_is_exclusive_and_expires,
    gc_lease_race_between_replicas,
    gc_runs,
    gc_forgets_garbage_and_spares_relinked_files,
    gc_tombstones_orphans,
    gc_file_deletes_overlap_and_a_failure_keeps_the_batch,
    gc_deletes_unreachable_manifests,
    usage_and_namespace_bytes,
    retention_rules_and_tags,
    retention_untagged,
    retention_globs_are_literal_but_for_wildcards,
    quotas,
    fsck_helpers,
    signing_key_is_stored_once,
    migrations_are_idempotent_and_concurrent,
    push_racing_the_collector_never_leaves_a_row_without_a_file,
    manifest_racing_the_collector_never_dangles,
    replicas_racing_on_one_tag,
    deleting_a_repository_while_pushing_to_it_fails_neither,
    signer_imports_a_legacy_key_file_once,
    nul_in_client_text_is_harmless,
    conflicts_are_recognised_and_run_again,
);

// ---------------------------------------------------------------------------------------
// Helpers

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Tag {
    Tag::from_str(s).unwrap()
}

fn dg(s: &str) -> Digest {
    Digest::sha256_of(s.as_bytes())
}

fn yes() -> Presence<'static> {
    Box::pin(async { Ok(true) })
}

fn no() -> Presence<'static> {
    Box::pin(async { Ok(false) })
}

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

async fn blob(db: &Db, r: &str, name: &str, size: u64) -> Digest {
    let d = dg(name);
    let linked = db
        .meta
        .link_blob(&repo(r), &d, size, yes(), None)
        .await
        .unwrap();
    assert_eq!(linked, Linked::Linked);
    d
}

/// A manifest `name` of `size` bytes over `blobs`, optionally tagged.
async fn image(db: &Db, r: &str, name: &str, blobs: &[&Digest], t: Option<&str>) -> Digest {
    let d = dg(name);
    let m = NewManifest {
        digest: &d,
        media_type: IMAGE,
        size: 100,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: blobs.to_vec(),
        children: vec![],
        pushed_by: Some("alice"),
    };
    let tag = t.map(tag);
    let put = db
        .meta
        .put_manifest(&repo(r), &m, tag.as_ref(), yes())
        .await
        .unwrap();
    assert_eq!(put, PutManifest::Stored);
    d
}

async fn index(db: &Db, r: &str, name: &str, children: &[&Digest], t: Option<&str>) -> Digest {
    let d = dg(name);
    let m = NewManifest {
        digest: &d,
        media_type: INDEX,
        size: 50,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: vec![],
        children: children.to_vec(),
        pushed_by: None,
    };
    let tag = t.map(tag);
    let put = db
        .meta
        .put_manifest(&repo(r), &m, tag.as_ref(), yes())
        .await
        .unwrap();
    assert_eq!(put, PutManifest::Stored);
    d
}

async fn referrer(db: &Db, r: &str, name: &str, subject: &Digest, kind: &str) -> Digest {
    let d = dg(name);
    let m = NewManifest {
        digest: &d,
        media_type: IMAGE,
        size: 10,
        artifact_type: Some(kind),
        subject: Some(subject),
        annotations: Some(format!("{{\"name\":\"{name}\"}}")),
        blobs: vec![],
        children: vec![],
        pushed_by: None,
    };
    let put = db
        .meta
        .put_manifest(&repo(r), &m, None, yes())
        .await
        .unwrap();
    assert_eq!(put, PutManifest::Stored);
    d
}

async fn tag_names(db: &Db, r: &str) -> Vec<String> {
    db.meta
        .tags(&repo(r), None, 1000)
        .await
        .unwrap()
        .map(|p| p.items)
        .unwrap_or_default()
}

/// Waits until the millisecond clock moved on, so that rows recorded next are newer.
async fn tick() {
    let t = now_ms();
    while now_ms() <= t + 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn entry(at: i64, action: &str) -> AuditEntry {
    AuditEntry {
        at,
        actor: Some("alice".into()),
        action: action.into(),
        target: Some("alice/app".into()),
        detail: None,
        client: Some("127.0.0.1".into()),
    }
}

/// A blob store in memory, for the tests that race pushes against deletions.
#[derive(Clone, Default)]
struct Files(Arc<Mutex<HashSet<Digest>>>);

impl Files {
    fn put(&self, d: &Digest) {
        self.0.lock().unwrap().insert(d.clone());
    }
    fn has(&self, d: &Digest) -> bool {
        self.0.lock().unwrap().contains(d)
    }
    /// A presence check that takes its time, to widen any race window.
    fn presence(&self, d: &Digest) -> Presence<'static> {
        let (files, d) = (self.clone(), d.clone());
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            Ok(files.has(&d))
        })
    }
}

// ---------------------------------------------------------------------------------------
// Registry

async fn links_and_vanished_blobs(db: Db) {
    db.meta.ping().await.unwrap();
    let layer = blob(&db, "alice/app", "layer", 42).await;
    assert_eq!(
        db.meta.repo_blob(&repo("alice/app"), &layer).await.unwrap(),
        Some(42)
    );
    // A repository never serves another's blobs.
    assert_eq!(
        db.meta.repo_blob(&repo("bob/app"), &layer).await.unwrap(),
        None
    );
    // Linking again (a mount) records nothing new but the link.
    blob(&db, "alice/z", "layer", 42).await;
    blob(&db, "alice/a", "layer", 42).await;
    let repos: Vec<String> = db
        .meta
        .repos_with_blob(&layer)
        .await
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(repos, ["alice/a", "alice/app", "alice/z"]);
    assert!(db
        .meta
        .unlink_blob(&repo("alice/app"), &layer)
        .await
        .unwrap());
    assert!(!db
        .meta
        .unlink_blob(&repo("alice/app"), &layer)
        .await
        .unwrap());
    assert_eq!(
        db.meta.repo_blob(&repo("alice/app"), &layer).await.unwrap(),
        None
    );
    assert_eq!(
        db.gc
            .blobs_known(&[layer.clone(), dg("nothing")])
            .await
            .unwrap(),
        [true, false]
    );

    // The file vanished before the commit: nothing is recorded.
    let gone = dg("gone");
    let r = db
        .meta
        .link_blob(&repo("carol/app"), &gone, 7, no(), None)
        .await
        .unwrap();
    assert_eq!(r, Linked::Vanished);
    assert_eq!(
        db.meta.repo_blob(&repo("carol/app"), &gone).await.unwrap(),
        None
    );
    assert_eq!(
        db.gc
            .blobs_known(std::slice::from_ref(&gone))
            .await
            .unwrap(),
        [false]
    );
    let catalog = db.meta.catalog(None, None, 100).await.unwrap().items;
    assert!(!catalog.contains(&"carol/app".to_string()), "{catalog:?}");
}

async fn uploads(db: Db) {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    db.meta
        .upload_create(a, &repo("alice/app"), "user:alice")
        .await
        .unwrap();
    db.meta
        .upload_create(b, &repo("alice/app"), "user:alice")
        .await
        .unwrap();
    db.meta
        .upload_create(c, &repo("bob/app"), "ip:10.0.0.1")
        .await
        .unwrap();
    assert_eq!(db.meta.uploads_open("user:alice").await.unwrap(), 2);
    assert_eq!(db.meta.uploads_open("ip:10.0.0.1").await.unwrap(), 1);
    assert_eq!(db.meta.uploads_open("user:nobody").await.unwrap(), 0);
    assert_eq!(
        db.meta.upload_repo(a).await.unwrap(),
        Some(repo("alice/app"))
    );
    assert_eq!(db.meta.upload_repo(Uuid::new_v4()).await.unwrap(), None);
    db.meta.upload_delete(a).await.unwrap();
    assert_eq!(db.meta.upload_repo(a).await.unwrap(), None);
    assert_eq!(db.meta.uploads_open("user:alice").await.unwrap(), 1);

    let mut expired = db.gc.expired_uploads(now_ms() + 1000).await.unwrap();
    expired.sort();
    let mut want = vec![b, c];
    want.sort();
    assert_eq!(expired, want);
    assert!(db.gc.expired_uploads(0).await.unwrap().is_empty());
    db.gc.gc_forget_upload(b).await.unwrap();
    assert_eq!(db.meta.upload_repo(b).await.unwrap(), None);
}

async fn manifests_references_and_tags(db: Db) {
    let r = repo("alice/app");
    let config = blob(&db, "alice/app", "config", 10).await;
    let layer = blob(&db, "alice/app", "layer", 1000).await;
    let foreign = blob(&db, "bob/app", "foreign", 5).await;

    // A layer linked only elsewhere is missing here.
    let d = dg("m-missing");
    let m = NewManifest {
        digest: &d,
        media_type: IMAGE,
        size: 100,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: vec![&config, &foreign],
        children: vec![],
        pushed_by: None,
    };
    let put = db
        .meta
        .put_manifest(&r, &m, Some(&tag("v1")), yes())
        .await
        .unwrap();
    assert_eq!(put, PutManifest::MissingReference(foreign.clone()));
    assert!(db.meta.manifest_by_digest(&r, &d).await.unwrap().is_none());
    assert!(db
        .meta
        .manifest_by_tag(&r, &tag("v1"))
        .await
        .unwrap()
        .is_none());

    let m1 = image(&db, "alice/app", "m1", &[&config, &layer], Some("v1")).await;
    let row = db
        .meta
        .manifest_by_tag(&r, &tag("v1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.digest.clone(), row.media_type.as_str(), row.size),
        (m1.clone(), IMAGE, 100)
    );
    let row = db.meta.manifest_by_digest(&r, &m1).await.unwrap().unwrap();
    assert_eq!(row.digest, m1);
    assert!(db
        .meta
        .manifest_by_digest(&repo("bob/app"), &m1)
        .await
        .unwrap()
        .is_none());

    // An index needs its children in the repository.
    let missing_child = dg("not-pushed");
    let d = dg("idx-missing");
    let m = NewManifest {
        digest: &d,
        media_type: INDEX,
        size: 50,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: vec![],
        children: vec![&m1, &missing_child],
        pushed_by: None,
    };
    let put = db.meta.put_manifest(&r, &m, None, yes()).await.unwrap();
    assert_eq!(put, PutManifest::MissingReference(missing_child));
    let idx = index(&db, "alice/app", "idx", &[&m1], Some("multi")).await;
    assert_eq!(
        db.meta
            .manifest_by_tag(&r, &tag("multi"))
            .await
            .unwrap()
            .unwrap()
            .digest,
        idx
    );

    // The manifest's bytes vanished: nothing is recorded, the tag doesn't move.
    let d = dg("m-vanished");
    let m = NewManifest {
        digest: &d,
        media_type: IMAGE,
        size: 100,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: vec![&config],
        children: vec![],
        pushed_by: None,
    };
    let put = db
        .meta
        .put_manifest(&r, &m, Some(&tag("v1")), no())
        .await
        .unwrap();
    assert_eq!(put, PutManifest::Vanished);
    assert!(db.meta.manifest_by_digest(&r, &d).await.unwrap().is_none());
    assert_eq!(
        db.meta
            .manifest_by_tag(&r, &tag("v1"))
            .await
            .unwrap()
            .unwrap()
            .digest,
        m1
    );

    // Moving a tag; pushing the same manifest again is fine.
    let m2 = image(&db, "alice/app", "m2", &[&config], Some("v1")).await;
    image(&db, "alice/app", "m2", &[&config], Some("v2")).await;
    assert_eq!(
        db.meta
            .manifest_by_tag(&r, &tag("v1"))
            .await
            .unwrap()
            .unwrap()
            .digest,
        m2
    );
    image(&db, "alice/app", "m1", &[&config, &layer], Some("v3")).await;

    assert!(db.meta.delete_tag(&r, &tag("v3")).await.unwrap());
    assert!(!db.meta.delete_tag(&r, &tag("v3")).await.unwrap());
    assert!(db.meta.manifest_by_digest(&r, &m1).await.unwrap().is_some());
    // Deleting a manifest takes every tag pointing at it.
    assert!(db.meta.delete_manifest(&r, &m2).await.unwrap());
    assert!(!db.meta.delete_manifest(&r, &m2).await.unwrap());
    assert_eq!(tag_names(&db, "alice/app").await, ["multi"]);
    assert!(!db
        .meta
        .delete_manifest(&repo("nobody/x"), &m1)
        .await
        .unwrap());
    assert!(!db
        .meta
        .delete_tag(&repo("nobody/x"), &tag("v1"))
        .await
        .unwrap());
}

async fn tags_page_in_byte_order(db: Db) {
    let config = blob(&db, "alice/app", "config", 1).await;
    let m = image(&db, "alice/app", "m", &[&config], None).await;
    let names = [
        "b", "aB", "a_b", "a-b", "a.b", "A", "Z", "_a", "a0", "a", "ab", "B",
    ];
    for n in names {
        image(&db, "alice/app", "m", &[&config], Some(n)).await;
    }
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort(); // Rust compares strings byte by byte, as the OCI spec's "lexical" order.
    assert_eq!(
        want,
        ["A", "B", "Z", "_a", "a", "a-b", "a.b", "a0", "aB", "a_b", "ab", "b"]
    );
    assert_eq!(tag_names(&db, "alice/app").await, want);

    // Pages of 5 following `last`.
    let r = repo("alice/app");
    let mut got = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let p = db.meta.tags(&r, last.as_deref(), 5).await.unwrap().unwrap();
        assert!(p.items.len() <= 5);
        got.extend(p.items.iter().cloned());
        last = p.items.last().cloned();
        if !p.more {
            break;
        }
    }
    assert_eq!(got, want);
    let p = db.meta.tags(&r, Some("a-b"), 2).await.unwrap().unwrap();
    assert_eq!(
        (p.items, p.more),
        (vec!["a.b".to_string(), "a0".into()], true)
    );
    let p = db.meta.tags(&r, Some("ab"), 2).await.unwrap().unwrap();
    assert_eq!((p.items, p.more), (vec!["b".to_string()], false));
    let p = db.meta.tags(&r, None, 0).await.unwrap().unwrap();
    assert_eq!((p.items.len(), p.more), (0, true));
    assert!(db
        .meta
        .tags(&repo("alice/none"), None, 10)
        .await
        .unwrap()
        .is_none());
    // A repository with no tag is known, with an empty list.
    db.meta.delete_manifest(&r, &m).await.unwrap();
    let p = db.meta.tags(&r, None, 10).await.unwrap().unwrap();
    assert!(p.items.is_empty() && !p.more);
}

async fn catalog_pages_in_byte_order_within_namespaces(db: Db) {
    let names = [
        "alice",
        "alice/app",
        "alice/a-b",
        "alice/a_b",
        "alice/a.b",
        "alice/a0",
        "alice/a/b",
        "alice-x/app",
        "alice0",
        "alicea/app",
        "bob/x",
        "al/x",
    ];
    for n in names {
        blob(&db, n, "layer", 1).await;
    }
    let mut all: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(db.meta.catalog(None, None, 100).await.unwrap().items, all);

    let alice = ["alice".to_string()];
    let p = db.meta.catalog(Some(&alice), None, 100).await.unwrap();
    assert_eq!(
        p.items,
        [
            "alice",
            "alice/a-b",
            "alice/a.b",
            "alice/a/b",
            "alice/a0",
            "alice/a_b",
            "alice/app"
        ]
    );
    assert!(!p.more);
    let p = db
        .meta
        .catalog(Some(&alice), Some("alice/a.b"), 2)
        .await
        .unwrap();
    assert_eq!(
        (p.items, p.more),
        (vec!["alice/a/b".to_string(), "alice/a0".into()], true)
    );

    let two = ["bob".to_string(), "alice-x".to_string()];
    let p = db.meta.catalog(Some(&two), None, 100).await.unwrap();
    assert_eq!(p.items, ["alice-x/app", "bob/x"]);
    let p = db.meta.catalog(Some(&[]), None, 100).await.unwrap();
    assert!(p.items.is_empty() && !p.more);
    let p = db.meta.catalog(None, None, 3).await.unwrap();
    assert_eq!((p.items.as_slice(), p.more), (&all[..3], true));
    let p = db.meta.catalog(None, Some(&all[9]), 3).await.unwrap();
    assert_eq!((p.items.as_slice(), p.more), (&all[10..], false));
}

async fn repositories_with_counts(db: Db) {
    let c = blob(&db, "alice/app", "config", 1).await;
    image(&db, "alice/app", "m1", &[&c], Some("v1")).await;
    tick().await;
    image(&db, "alice/app", "m2", &[&c], Some("v2")).await;
    image(&db, "alice/app", "m3", &[&c], None).await;
    blob(&db, "alice/tool", "config", 1).await;
    blob(&db, "bob/app", "config", 1).await;

    let (items, more) = db.meta.repositories(None, None, None, 100).await.unwrap();
    assert!(!more);
    let names: Vec<&str> = items.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alice/app", "alice/tool", "bob/app"]);
    let app = &items[0];
    assert_eq!((app.tags, app.manifests), (2, 3));
    let v2 = db
        .meta
        .tag_details(&repo("alice/app"), TagFilter::ALL)
        .await
        .unwrap()
        .unwrap()
        .tags
        .iter()
        .map(|t| t.updated_at)
        .max();
    assert_eq!(app.updated_at, v2);
    assert!(app.created_at > 0 && app.created_at <= now_ms());
    assert_eq!(
        (items[1].tags, items[1].manifests, items[1].updated_at),
        (0, 0, None)
    );

    let (items, _) = db
        .meta
        .repositories(None, Some("app"), None, 100)
        .await
        .unwrap();
    let names: Vec<&str> = items.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alice/app", "bob/app"]);
    let alice = ["alice".to_string()];
    let (items, more) = db
        .meta
        .repositories(Some(&alice), Some("app"), None, 100)
        .await
        .unwrap();
    assert_eq!((items.len(), more), (1, false));
    let (items, more) = db
        .meta
        .repositories(Some(&alice), None, None, 1)
        .await
        .unwrap();
    assert_eq!((items[0].name.as_str(), more), ("alice/app", true));
    let (items, more) = db
        .meta
        .repositories(Some(&alice), None, Some("alice/app"), 1)
        .await
        .unwrap();
    assert_eq!((items[0].name.as_str(), more), ("alice/tool", false));
    let (items, _) = db
        .meta
        .repositories(Some(&[]), None, None, 100)
        .await
        .unwrap();
    assert!(items.is_empty());
    // `contains` is a substring, not a pattern.
    let (items, _) = db
        .meta
        .repositories(None, Some("%"), None, 100)
        .await
        .unwrap();
    assert!(items.is_empty());
}

async fn tag_details_sizes_filters_and_total(db: Db) {
    let r = repo("alice/app");
    let config = blob(&db, "alice/app", "config", 10).await;
    let layer = blob(&db, "alice/app", "layer", 1000).await;
    let amd = image(&db, "alice/app", "amd", &[&config, &layer], Some("amd")).await;
    let arm = image(&db, "alice/app", "arm", &[&config, &layer], None).await;
    index(&db, "alice/app", "idx", &[&amd, &arm], Some("multi")).await;
    image(
        &db,
        "alice/app",
        "amd",
        &[&config, &layer],
        Some("also-amd"),
    )
    .await;

    let page = db
        .meta
        .tag_details(&r, TagFilter::ALL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.total, 3);
    let by: Vec<(&str, u64)> = page
        .tags
        .iter()
        .map(|t| (t.name.as_str(), t.size))
        .collect();
    // An image: itself plus its blobs; an index: itself plus each child with its blobs.
    assert_eq!(
        by,
        [("also-amd", 1110), ("amd", 1110), ("multi", 50 + 2 * 1110)]
    );
    let amd_tag = &page.tags[1];
    assert_eq!(
        (amd_tag.digest.as_str(), amd_tag.media_type.as_str()),
        (amd.to_string().as_str(), IMAGE)
    );
    assert_eq!(amd_tag.pushed_by.as_deref(), Some("alice"));
    assert_eq!(page.tags[2].pushed_by, None);

    let amd_s = amd.to_string();
    let f = TagFilter {
        last: None,
        n: 100,
        digest: Some(&amd_s),
    };
    let page = db.meta.tag_details(&r, f).await.unwrap().unwrap();
    let names: Vec<&str> = page.tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        (names.as_slice(), page.total),
        (["also-amd", "amd"].as_slice(), 2)
    );
    let f = TagFilter {
        last: Some("also-amd"),
        n: 1,
        digest: None,
    };
    let page = db.meta.tag_details(&r, f).await.unwrap().unwrap();
    let names: Vec<&str> = page.tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!((names.as_slice(), page.total), (["amd"].as_slice(), 3));
    assert!(db
        .meta
        .tag_details(&repo("alice/none"), TagFilter::ALL)
        .await
        .unwrap()
        .is_none());
}

async fn delete_repository_takes_everything_but_blobs(db: Db) {
    let r = repo("alice/app");
    let c = blob(&db, "alice/app", "config", 1).await;
    image(&db, "alice/app", "m", &[&c], Some("v1")).await;
    let up = Uuid::new_v4();
    db.meta.upload_create(up, &r, "user:alice").await.unwrap();
    blob(&db, "alice/other", "config", 1).await;

    assert!(db.meta.delete_repository(&r).await.unwrap());
    assert!(!db.meta.delete_repository(&r).await.unwrap());
    assert!(db.meta.tags(&r, None, 10).await.unwrap().is_none());
    assert!(db.meta.repo_blob(&r, &c).await.unwrap().is_none());
    assert!(db.meta.upload_repo(up).await.unwrap().is_none());
    assert_eq!(
        db.meta.catalog(None, None, 10).await.unwrap().items,
        ["alice/other"]
    );
    // The blob itself is the collector's business.
    assert_eq!(
        db.gc.blobs_known(&[c, dg("m")]).await.unwrap(),
        [true, true]
    );
    // Pushing again starts a fresh repository.
    let c = blob(&db, "alice/app", "config", 1).await;
    image(&db, "alice/app", "m", &[&c], Some("v2")).await;
    assert_eq!(tag_names(&db, "alice/app").await, ["v2"]);
}

async fn referrers(db: Db) {
    let r = repo("alice/app");
    let c = blob(&db, "alice/app", "config", 1).await;
    let subject = image(&db, "alice/app", "subject", &[&c], Some("v1")).await;
    let sig = referrer(
        &db,
        "alice/app",
        "sig",
        &subject,
        "application/vnd.dev.cosign",
    )
    .await;
    tick().await;
    let sbom = referrer(&db, "alice/app", "sbom", &subject, "application/spdx+json").await;
    referrer(
        &db,
        "bob/app",
        "elsewhere",
        &subject,
        "application/spdx+json",
    )
    .await;

    let all = db.meta.referrers(&r, &subject, None).await.unwrap();
    let ds: Vec<&Digest> = all.iter().map(|x| &x.digest).collect();
    assert_eq!(ds, [&sig, &sbom]);
    assert_eq!(
        all[0].artifact_type.as_deref(),
        Some("application/vnd.dev.cosign")
    );
    assert_eq!(all[0].annotations.as_deref(), Some("{\"name\":\"sig\"}"));
    assert_eq!((all[0].size, all[0].media_type.as_str()), (10, IMAGE));
    let spdx = db
        .meta
        .referrers(&r, &subject, Some("application/spdx+json"))
        .await
        .unwrap();
    assert_eq!(spdx.len(), 1);
    assert_eq!(spdx[0].digest, sbom);
    assert!(db.meta.referrers(&r, &sig, None).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Accounts

async fn users(db: Db) {
    let a = &db.accounts;
    assert_eq!(a.user_count().await.unwrap(), 0);
    let Created::Ok(bob) = a.user_create("bob", "hash-b", false).await.unwrap() else {
        panic!("bob")
    };
    let Created::Ok(alice) = a.user_create("alice", "hash-a", true).await.unwrap() else {
        panic!("alice")
    };
    assert!(matches!(
        a.user_create("alice", "x", false).await.unwrap(),
        Created::NameTaken
    ));
    assert!(alice.is_admin && !bob.is_admin && alice.last_login_at.is_none());
    assert_eq!(a.user_count().await.unwrap(), 2);

    let (u, hash) = a.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(
        (u.id, u.name.as_str(), hash.as_str(), u.is_admin),
        (alice.id, "alice", "hash-a", true)
    );
    assert!(a.user_by_name("carol").await.unwrap().is_none());
    assert_eq!(a.user_by_id(bob.id).await.unwrap().unwrap().name, "bob");
    assert!(a.user_by_id(-1).await.unwrap().is_none());
    let names: Vec<String> = a
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    assert!(a.user_set_password("bob", "hash-b2").await.unwrap());
    assert!(!a.user_set_password("carol", "x").await.unwrap());
    assert_eq!(a.user_by_name("bob").await.unwrap().unwrap().1, "hash-b2");
    assert!(a.user_set_admin("bob", true).await.unwrap());
    assert!(!a.user_set_admin("carol", true).await.unwrap());
    assert!(a.user_by_id(bob.id).await.unwrap().unwrap().is_admin);
    a.user_logged_in(bob.id).await.unwrap();
    assert!(a
        .user_by_id(bob.id)
        .await
        .unwrap()
        .unwrap()
        .last_login_at
        .is_some());

    // A team is not a user, and its name is taken for users too.
    assert!(matches!(
        a.team_create("web").await.unwrap(),
        Created::Ok(_)
    ));
    assert!(matches!(
        a.user_create("web", "x", false).await.unwrap(),
        Created::NameTaken
    ));
    assert!(a.user_by_name("web").await.unwrap().is_none());
    assert_eq!(a.user_count().await.unwrap(), 2);
    assert!(!a.user_set_password("web", "x").await.unwrap());
}

async fn teams_and_members(db: Db) {
    let a = &db.accounts;
    let Created::Ok(alice) = a.user_create("alice", "h", false).await.unwrap() else {
        panic!()
    };
    a.user_create("bob", "h", false).await.unwrap();
    let Created::Ok(web) = a.team_create("web").await.unwrap() else {
        panic!()
    };
    assert!(web.members.is_empty());
    assert!(matches!(
        a.team_create("web").await.unwrap(),
        Created::NameTaken
    ));
    assert!(matches!(
        a.team_create("alice").await.unwrap(),
        Created::NameTaken
    ));
    a.team_create("ops").await.unwrap();

    assert_eq!(
        a.team_member_add("nope", "alice", Role::Member)
            .await
            .unwrap(),
        MemberChange::NoSuchTeam
    );
    assert_eq!(
        a.team_member_add("web", "nope", Role::Member)
            .await
            .unwrap(),
        MemberChange::NoSuchUser
    );
    // A team can't be a member.
    assert_eq!(
        a.team_member_add("web", "ops", Role::Member).await.unwrap(),
        MemberChange::NoSuchUser
    );
    assert_eq!(
        a.team_member_add("web", "bob", Role::Member).await.unwrap(),
        MemberChange::Done
    );
    assert_eq!(
        a.team_member_add("web", "alice", Role::Member)
            .await
            .unwrap(),
        MemberChange::Done
    );
    assert_eq!(
        a.team_member_add("web", "alice", Role::Member)
            .await
            .unwrap(),
        MemberChange::Done
    );
    a.team_member_add("ops", "alice", Role::Member)
        .await
        .unwrap();

    let t = a.team("web").await.unwrap().unwrap();
    let members: Vec<(&str, Role)> = t
        .members
        .iter()
        .map(|m| (m.user.as_str(), m.role))
        .collect();
    assert_eq!(members, [("alice", Role::Member), ("bob", Role::Member)]);
    assert!(a.team("alice").await.unwrap().is_none());
    let teams: Vec<String> = a
        .teams()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(teams, ["ops", "web"]);
    assert_eq!(
        a.user_teams(alice.id).await.unwrap(),
        [
            ("ops".to_string(), Role::Member),
            ("web".to_string(), Role::Member)
        ]
    );
    // The one query behind every bearer-authenticated request: the user by id and
    // name, with the same teams.
    let (u, teams) = a
        .bearer_user(alice.id, "alice", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u.id, u.name.as_str()), (alice.id, "alice"));
    assert_eq!(teams, a.user_teams(alice.id).await.unwrap());
    assert!(a
        .bearer_user(alice.id, "bob", None)
        .await
        .unwrap()
        .is_none());

    assert_eq!(
        a.team_member_remove("web", "alice").await.unwrap(),
        MemberChange::Done
    );
    assert_eq!(
        a.team_member_remove("web", "alice").await.unwrap(),
        MemberChange::NoSuchUser
    );
    assert_eq!(
        a.team_member_remove("nope", "alice").await.unwrap(),
        MemberChange::NoSuchTeam
    );
    assert_eq!(
        a.user_teams(alice.id).await.unwrap(),
        [("ops".to_string(), Role::Member)]
    );
    let (_, teams) = a
        .bearer_user(alice.id, "alice", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(teams, [("ops".to_string(), Role::Member)]);
    a.team_member_remove("ops", "alice").await.unwrap();
    let (u, teams) = a
        .bearer_user(alice.id, "alice", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u.name.as_str(), teams.len()), ("alice", 0));
    // Deleting a user takes their memberships.
    a.account_delete("bob", AccountKind::User).await.unwrap();
    assert!(a.team("web").await.unwrap().unwrap().members.is_empty());
}

async fn tokens(db: Db) {
    let a = &db.accounts;
    let Created::Ok(alice) = a.user_create("alice", "h", false).await.unwrap() else {
        panic!()
    };
    let Created::Ok(bob) = a.user_create("bob", "h", false).await.unwrap() else {
        panic!()
    };
    let Created::Ok(ci) = a
        .token_create(alice.id, "ci", "secret-1", None)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            ci.user.as_str(),
            ci.name.as_str(),
            ci.expires_at,
            ci.last_used_at
        ),
        ("alice", "ci", None, None)
    );
    assert!(matches!(
        a.token_create(alice.id, "ci", "secret-2", None)
            .await
            .unwrap(),
        Created::NameTaken
    ));
    // Another user may use the name; a secret is unique.
    assert!(matches!(
        a.token_create(bob.id, "ci", "secret-3", None)
            .await
            .unwrap(),
        Created::Ok(_)
    ));
    assert!(matches!(
        a.token_create(bob.id, "x", "secret-1", None).await.unwrap(),
        Created::NameTaken
    ));
    let Created::Ok(old) = a
        .token_create(alice.id, "old", "secret-old", Some(now_ms() - 1))
        .await
        .unwrap()
    else {
        panic!()
    };

    let (t, u) = a.token_use("secret-1").await.unwrap().unwrap();
    assert_eq!((t.id, u.id), (ci.id, alice.id));
    assert!(a.tokens(Some("alice")).await.unwrap()[0]
        .last_used_at
        .is_some());
    assert!(a.token_use("secret-old").await.unwrap().is_none());
    assert!(a.token_use("nope").await.unwrap().is_none());
    // A bearer token's user is found only while its access token is valid.
    let bearer = |token: i64| a.bearer_user(alice.id, "alice", Some(token));
    assert_eq!(bearer(ci.id).await.unwrap().unwrap().0.name, "alice");
    assert!(bearer(old.id).await.unwrap().is_none());
    assert!(bearer(-5).await.unwrap().is_none());

    let all: Vec<(String, String)> = a
        .tokens(None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.user, t.name))
        .collect();
    assert_eq!(
        all,
        [
            ("alice".into(), "ci".into()),
            ("alice".into(), "old".into()),
            ("bob".into(), "ci".into())
        ]
    );
    assert_eq!(a.tokens(Some("bob")).await.unwrap().len(), 1);
    assert!(a.tokens(Some("carol")).await.unwrap().is_empty());

    assert!(a.token_revoke("alice", "ci").await.unwrap());
    assert!(!a.token_revoke("alice", "ci").await.unwrap());
    assert!(bearer(ci.id).await.unwrap().is_none());
    assert!(a.token_use("secret-1").await.unwrap().is_none());
    // Deleting the user takes their tokens.
    a.account_delete("bob", AccountKind::User).await.unwrap();
    assert!(a.token_use("secret-3").await.unwrap().is_none());
}

async fn sessions(db: Db) {
    let a = &db.accounts;
    let Created::Ok(alice) = a.user_create("alice", "h", false).await.unwrap() else {
        panic!()
    };
    let later = now_ms() + 60_000;
    a.session_create("s1", alice.id, "csrf1", later)
        .await
        .unwrap();
    a.session_create("s2", alice.id, "csrf2", later)
        .await
        .unwrap();
    a.session_create("s3", alice.id, "csrf3", later)
        .await
        .unwrap();
    a.session_create("expired", alice.id, "c", now_ms() - 1)
        .await
        .unwrap();
    let (u, csrf) = a.session_get("s1").await.unwrap().unwrap();
    assert_eq!((u.id, csrf.as_str()), (alice.id, "csrf1"));
    assert!(a.session_get("expired").await.unwrap().is_none());
    assert!(a.session_get("nope").await.unwrap().is_none());
    a.session_delete("s1").await.unwrap();
    assert!(a.session_get("s1").await.unwrap().is_none());
    a.sessions_delete_user("alice", Some("s2")).await.unwrap();
    assert!(a.session_get("s2").await.unwrap().is_some());
    assert!(a.session_get("s3").await.unwrap().is_none());
    a.sessions_delete_user("alice", None).await.unwrap();
    assert!(a.session_get("s2").await.unwrap().is_none());
    a.session_create("s4", alice.id, "c", later).await.unwrap();
    a.account_delete("alice", AccountKind::User).await.unwrap();
    assert!(a.session_get("s4").await.unwrap().is_none());
}

/// Failed sign-ins recorded by one process are what every other process on the database
/// sees: a throttle that replicas share.
async fn login_failures_are_shared_by_replicas(db: Db) {
    let other = db.replica().await;
    let (a, b) = (&db.accounts, &other.accounts);
    let keys = ["user:alice", "ip:192.0.2.7"];
    assert!(a.login_failures(&keys).await.unwrap().is_empty());
    a.login_failed(&keys, 1_000, 0).await.unwrap();
    b.login_failed(&keys, 2_000, 0).await.unwrap();
    b.login_failed(&["user:alice"], 3_000, 0).await.unwrap();
    let mut seen = a.login_failures(&keys).await.unwrap();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("ip:192.0.2.7".to_string(), 2, 2_000),
            ("user:alice".to_string(), 3, 3_000)
        ]
    );
    assert!(b.login_failures(&["user:bob"]).await.unwrap().is_empty());
    assert!(b.login_failures(&[]).await.unwrap().is_empty());
    // A success on one replica clears the user's count on all; the address keeps its own.
    b.login_forget("user:alice").await.unwrap();
    assert_eq!(
        a.login_failures(&keys).await.unwrap(),
        [("ip:192.0.2.7".to_string(), 2, 2_000)]
    );
    // Records older than the horizon are dropped by the next failure, and a count that
    // old starts again at one.
    a.login_failed(&["user:carol"], 10_000, 0).await.unwrap();
    b.login_failed(&["ip:192.0.2.7"], 20_000, 15_000)
        .await
        .unwrap();
    assert_eq!(
        a.login_failures(&["user:carol", "ip:192.0.2.7"])
            .await
            .unwrap(),
        [("ip:192.0.2.7".to_string(), 1, 20_000)]
    );
}

/// Failures arriving at once on several replicas, for overlapping keys in either order,
/// are each counted once and never deadlock.
async fn login_failures_racing_on_replicas_are_all_counted(db: Db) {
    let replicas = [db.replica().await, db.replica().await, db.replica().await];
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let r = replicas[i % 3].accounts.clone();
            tokio::spawn(async move {
                let user = format!("user:u{}", i % 2);
                let keys = if i % 2 == 0 {
                    vec![user, "ip:192.0.2.1".to_string()]
                } else {
                    vec!["ip:192.0.2.1".to_string(), user]
                };
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                r.login_failed(&keys, 5_000 + i as i64, 0).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut seen: Vec<(String, u32)> = db
        .accounts
        .login_failures(&["user:u0", "user:u1", "ip:192.0.2.1"])
        .await
        .unwrap()
        .into_iter()
        .map(|(k, n, _)| (k, n))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("ip:192.0.2.1".to_string(), 60),
            ("user:u0".to_string(), 30),
            ("user:u1".to_string(), 30)
        ]
    );
}

async fn audit_log(db: Db) {
    let a = &db.accounts;
    for (at, action) in [
        (100, "login"),
        (200, "push"),
        (200, "delete"),
        (300, "user_add"),
    ] {
        a.audit(entry(at, action)).await.unwrap();
    }
    let actions = |v: Vec<AuditEntry>| v.into_iter().map(|e| e.action).collect::<Vec<_>>();
    assert_eq!(
        actions(a.audit_log(None, 10).await.unwrap()),
        ["user_add", "delete", "push", "login"]
    );
    assert_eq!(
        actions(a.audit_log(Some(300), 2).await.unwrap()),
        ["delete", "push"]
    );
    assert_eq!(
        actions(a.audit_log(Some(100), 10).await.unwrap()),
        Vec::<String>::new()
    );
    let e = &a.audit_log(None, 1).await.unwrap()[0];
    assert_eq!(
        (
            e.at,
            e.actor.as_deref(),
            e.target.as_deref(),
            e.detail.as_deref(),
            e.client.as_deref()
        ),
        (
            300,
            Some("alice"),
            Some("alice/app"),
            None,
            Some("127.0.0.1")
        )
    );
}

async fn account_delete_deletes_the_namespace(db: Db) {
    let a = &db.accounts;
    a.user_create("alice", "h", false).await.unwrap();
    a.team_create("web").await.unwrap();
    for r in [
        "alice",
        "alice/app",
        "alice/a/b",
        "alice-x/app",
        "alice0",
        "web/site",
    ] {
        let c = blob(&db, r, "config", 1).await;
        image(&db, r, "m", &[&c], Some("v1")).await;
    }
    let up = Uuid::new_v4();
    db.meta
        .upload_create(up, &repo("alice/app"), "user:alice")
        .await
        .unwrap();
    db.gc.quota_set("alice", Some(1000)).await.unwrap();

    assert_eq!(
        a.account_delete("alice", AccountKind::Team).await.unwrap(),
        None
    );
    assert_eq!(
        a.account_delete("nobody", AccountKind::User).await.unwrap(),
        None
    );
    assert_eq!(
        a.account_delete("alice", AccountKind::User).await.unwrap(),
        Some(3)
    );
    assert_eq!(
        db.meta.catalog(None, None, 100).await.unwrap().items,
        ["alice-x/app", "alice0", "web/site"]
    );
    assert!(db.meta.upload_repo(up).await.unwrap().is_none());
    assert_eq!(db.gc.quota("alice").await.unwrap(), None);
    assert!(a.user_by_name("alice").await.unwrap().is_none());
    assert_eq!(
        a.account_delete("web", AccountKind::Team).await.unwrap(),
        Some(1)
    );
    assert!(a.team("web").await.unwrap().is_none());
    // The name is free again.
    assert!(matches!(
        a.user_create("alice", "h", false).await.unwrap(),
        Created::Ok(_)
    ));
}

async fn signing_key_is_stored_once(db: Db) {
    let first = db.accounts.signing_key("key-one").await.unwrap();
    assert_eq!(first, "key-one");
    assert_eq!(db.accounts.signing_key("key-two").await.unwrap(), "key-one");
    // Replicas starting together all end up with one key.
    let (r1, r2) = (db.replica().await, db.replica().await);
    let (a, b) = tokio::join!(r1.accounts.signing_key("a"), r2.accounts.signing_key("b"));
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        ("key-one".to_string(), "key-one".to_string())
    );
}

// ---------------------------------------------------------------------------------------
// Garbage collection

async fn gc_lease_is_exclusive_and_expires(db: Db) {
    let g = &db.gc;
    assert!(!g.gc_lease_held().await.unwrap());
    assert!(g.gc_lease("a", 60_000).await.unwrap());
    assert!(g.gc_lease_held().await.unwrap());
    assert!(!g.gc_lease("b", 60_000).await.unwrap());
    // The holder renews.
    assert!(g.gc_lease("a", 60_000).await.unwrap());
    // Releasing someone else's lease does nothing.
    g.gc_release("b").await.unwrap();
    assert!(!g.gc_lease("b", 60_000).await.unwrap());
    g.gc_release("a").await.unwrap();
    assert!(!g.gc_lease_held().await.unwrap());
    assert!(g.gc_lease("b", 60_000).await.unwrap());
    // A holder that dies: its lease expires and another takes it.
    assert!(g.gc_lease("b", 30).await.unwrap());
    assert!(!g.gc_lease("c", 60_000).await.unwrap());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(!g.gc_lease_held().await.unwrap());
    assert!(g.gc_lease("c", 60_000).await.unwrap());
    assert!(!g.gc_lease("b", 60_000).await.unwrap());
}

async fn gc_lease_race_between_replicas(db: Db) {
    let replicas = [
        db.clone(),
        db.replica().await,
        db.replica().await,
        db.replica().await,
    ];
    for round in 0..15 {
        let tasks: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let g = r.gc.clone();
                tokio::spawn(
                    async move { g.gc_lease(&format!("r{round}-{i}"), 60_000).await.unwrap() },
                )
            })
            .collect();
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if t.await.unwrap() {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        db.gc
            .gc_release(&format!("r{round}-{}", winners[0]))
            .await
            .unwrap();
    }
}

async fn gc_runs(db: Db) {
    let g = &db.gc;
    let first = g.gc_run_start("cli", true, 1000).await.unwrap();
    let second = g.gc_run_start("schedule", false, 2000).await.unwrap();
    let report = GcReport {
        tags_deleted: 1,
        manifests_deleted: 2,
        blobs_deleted: 3,
        bytes_freed: 4,
        uploads_expired: 5,
    };
    g.gc_run_finish(second, &report, Some("boom"))
        .await
        .unwrap();
    let runs = g.gc_runs(10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second, first]
    );
    let r = &runs[0];
    assert_eq!(
        (r.trigger.as_str(), r.dry_run, r.grace_ms),
        ("schedule", false, 2000)
    );
    assert_eq!((&r.report, r.error.as_deref()), (&report, Some("boom")));
    assert!(r.finished_at.is_some() && r.started_at > 0);
    let r = &runs[1];
    assert_eq!(
        (r.trigger.as_str(), r.dry_run, r.finished_at, &r.report),
        ("cli", true, None, &GcReport::default())
    );
    assert_eq!(g.gc_runs(1).await.unwrap().len(), 1);
}

async fn gc_forgets_garbage_and_spares_relinked_files(db: Db) {
    let g = &db.gc;
    let used = blob(&db, "alice/app", "used", 10).await;
    let m = image(&db, "alice/app", "m", &[&used], Some("v1")).await;
    let loose = blob(&db, "alice/app", "loose", 20).await;
    let relinked = blob(&db, "alice/app", "relinked", 30).await;
    let fresh_cutoff = now_ms() - 60_000;
    // Nothing is garbage yet under a cutoff before everything was pushed.
    assert!(g.gc_blob_candidates(fresh_cutoff).await.unwrap().is_empty());
    tick().await;
    let cutoff = now_ms();
    tick().await;

    let mut cands = g.gc_blob_candidates(cutoff).await.unwrap();
    cands.sort();
    let mut want = vec![(loose.clone(), 20), (relinked.clone(), 30)];
    want.sort();
    assert_eq!(cands, want, "the manifest and its layer are referenced");
    let _ = m;

    // Linked again after the cutoff: the re-check spares it.
    blob(&db, "alice/other", "relinked", 30).await;
    let ds: Vec<Digest> = cands.iter().map(|(d, _)| d.clone()).collect();
    let gone = g.gc_forget_blobs(&ds, cutoff).await.unwrap();
    assert_eq!(gone, [(loose.clone(), 20)]);
    assert_eq!(
        g.blobs_known(&[loose.clone(), relinked.clone()])
            .await
            .unwrap(),
        [false, true]
    );
    assert!(db
        .meta
        .repo_blob(&repo("alice/app"), &loose)
        .await
        .unwrap()
        .is_none());

    // A second tombstone whose blob is pushed again before the files go.
    let again = blob(&db, "alice/app", "again", 5).await;
    tick().await;
    let cutoff2 = now_ms();
    assert_eq!(
        g.gc_forget_blobs(std::slice::from_ref(&again), cutoff2)
            .await
            .unwrap()
            .len(),
        1
    );
    blob(&db, "alice/app", "again", 5).await;

    let files = Files::default();
    for d in [&loose, &again, &relinked] {
        files.put(d);
    }
    let f = files.clone();
    let delete =
        move |d: Digest| -> futures_util::future::BoxFuture<'static, anyhow::Result<bool>> {
            let f = f.clone();
            Box::pin(async move { Ok(f.0.lock().unwrap().remove(&d)) })
        };
    let (deleted, left) = g.gc_delete_files(1, &delete).await.unwrap();
    assert_eq!(left, 1);
    let (deleted2, left) = g.gc_delete_files(10, &delete).await.unwrap();
    assert_eq!((deleted + deleted2, left), (1, 0));
    assert!(!files.has(&loose));
    assert!(files.has(&again), "pushed again after its tombstone: kept");
    assert!(files.has(&relinked));
    assert_eq!(g.gc_delete_files(10, &delete).await.unwrap(), (0, 0));
}

/// A batch's files are deleted several at once, never more than `PARALLEL_DELETES`;
/// when one delete fails the batch's tombstones all stay, and the next run finishes.
async fn gc_file_deletes_overlap_and_a_failure_keeps_the_batch(db: Db) {
    use super::gc::PARALLEL_DELETES;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let g = &db.gc;
    let mut digests = Vec::new();
    for i in 0..40 {
        digests.push(blob(&db, "alice/app", &format!("many-{i}"), 1).await);
    }
    tick().await;
    let tombstoned = g.gc_forget_blobs(&digests, now_ms()).await.unwrap();
    assert_eq!(tombstoned.len(), 40);
    let files = Files::default();
    for d in &digests {
        files.put(d);
    }
    let (inflight, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let deleter = |fail: Option<Digest>| {
        let (f, inflight, most) = (files.clone(), inflight.clone(), most.clone());
        move |d: Digest| -> futures_util::future::BoxFuture<'static, anyhow::Result<bool>> {
            let (f, inflight, most, fail) =
                (f.clone(), inflight.clone(), most.clone(), fail.clone());
            Box::pin(async move {
                let now = inflight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inflight.fetch_sub(1, Ordering::SeqCst);
                if fail.as_ref() == Some(&d) {
                    anyhow::bail!("the store refused to delete {d}");
                }
                Ok(f.0.lock().unwrap().remove(&d))
            })
        }
    };
    let failing = deleter(Some(digests[20].clone()));
    let e = g.gc_delete_files(64, &failing).await.unwrap_err();
    assert!(format!("{e:#}").contains("refused"), "{e:#}");
    assert!(files.has(&digests[20]));
    let most_seen = most.load(Ordering::SeqCst);
    assert!(
        (2..=PARALLEL_DELETES).contains(&most_seen),
        "{most_seen} deletes at once"
    );
    // Every tombstone is still there: the next run goes over the whole batch again and
    // finds the files already deleted gone.
    let working = deleter(None);
    let (deleted, left) = g.gc_delete_files(64, &working).await.unwrap();
    assert_eq!(left, 0);
    assert!((1..=40).contains(&deleted), "{deleted}");
    assert!(digests.iter().all(|d| !files.has(d)));
    assert_eq!(g.gc_delete_files(64, &working).await.unwrap(), (0, 0));
}

async fn gc_tombstones_orphans(db: Db) {
    let g = &db.gc;
    let known = blob(&db, "alice/app", "known", 1).await;
    let orphan = dg("orphan");
    let n = g
        .gc_tombstone_orphans(&[(known.clone(), 1), (orphan.clone(), 9)])
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Twice is once.
    assert_eq!(
        g.gc_tombstone_orphans(&[(orphan.clone(), 9)])
            .await
            .unwrap(),
        0
    );
    let files = Files::default();
    files.put(&known);
    files.put(&orphan);
    let f = files.clone();
    let delete =
        move |d: Digest| -> futures_util::future::BoxFuture<'static, anyhow::Result<bool>> {
            let f = f.clone();
            Box::pin(async move { Ok(f.0.lock().unwrap().remove(&d)) })
        };
    assert_eq!(g.gc_delete_files(10, &delete).await.unwrap(), (1, 0));
    assert!(files.has(&known) && !files.has(&orphan));
}

async fn gc_deletes_unreachable_manifests(db: Db) {
    let g = &db.gc;
    let r = repo("alice/app");
    let c = blob(&db, "alice/app", "config", 1).await;
    let tagged = image(&db, "alice/app", "tagged", &[&c], Some("v1")).await;
    let child = image(&db, "alice/app", "child", &[&c], None).await;
    let idx = index(&db, "alice/app", "idx", &[&child], Some("multi")).await;
    let sig = referrer(&db, "alice/app", "sig", &tagged, "sig").await;
    let sig_of_sig = referrer(&db, "alice/app", "sig2", &sig, "sig").await;
    let untagged = image(&db, "alice/app", "untagged", &[&c], None).await;
    let dead_child = image(&db, "alice/app", "dead-child", &[&c], None).await;
    let dead_idx = index(&db, "alice/app", "dead-idx", &[&dead_child], None).await;
    // The same digest tagged in one repository, untagged in another.
    image(&db, "alice/app", "shared", &[&c], Some("shared")).await;
    let c2 = blob(&db, "bob/app", "config", 1).await;
    let shared_b = image(&db, "bob/app", "shared", &[&c2], None).await;
    tick().await;
    let cutoff = now_ms();
    tick().await;
    let recent = image(&db, "alice/app", "recent", &[&c], None).await;

    assert_eq!(
        g.gc_delete_unreachable_manifests(cutoff - 60_000, true)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        g.gc_delete_unreachable_manifests(cutoff, true)
            .await
            .unwrap(),
        4
    );
    assert!(
        db.meta
            .manifest_by_digest(&r, &untagged)
            .await
            .unwrap()
            .is_some(),
        "dry run"
    );
    assert_eq!(
        g.gc_delete_unreachable_manifests(cutoff, false)
            .await
            .unwrap(),
        4
    );
    for d in [&untagged, &dead_child, &dead_idx] {
        assert!(db.meta.manifest_by_digest(&r, d).await.unwrap().is_none());
    }
    assert!(db
        .meta
        .manifest_by_digest(&repo("bob/app"), &shared_b)
        .await
        .unwrap()
        .is_none());
    for d in [
        &tagged,
        &child,
        &idx,
        &sig,
        &sig_of_sig,
        &recent,
        &dg("shared"),
    ] {
        assert!(
            db.meta.manifest_by_digest(&r, d).await.unwrap().is_some(),
            "{d}"
        );
    }
    assert_eq!(
        g.gc_delete_unreachable_manifests(cutoff, false)
            .await
            .unwrap(),
        0
    );
}

async fn usage_and_namespace_bytes(db: Db) {
    let g = &db.gc;
    let shared = blob(&db, "alice/app", "shared", 1000).await;
    blob(&db, "alice/tool", "shared", 1000).await;
    blob(&db, "bob/app", "shared", 1000).await;
    let own = blob(&db, "alice/app", "own", 10).await;
    image(&db, "alice/app", "m", &[&shared, &own], Some("v1")).await;
    blob(&db, "carol", "c", 1).await;
    g.quota_set("alice", Some(5000)).await.unwrap();
    g.quota_set("dave", Some(7)).await.unwrap();

    let u = g.usage().await.unwrap();
    assert_eq!((u.total_bytes, u.blobs), (1000 + 10 + 100 + 1, 4));
    let ns: Vec<(&str, u64, u64, Option<u64>)> = u
        .namespaces
        .iter()
        .map(|n| (n.namespace.as_str(), n.bytes, n.repositories, n.quota))
        .collect();
    assert_eq!(
        ns,
        [
            ("alice", 1110, 2, Some(5000)),
            ("bob", 1000, 1, None),
            ("carol", 1, 1, None),
            ("dave", 0, 0, Some(7)),
        ]
    );

    assert_eq!(
        g.namespace_bytes("alice", None).await.unwrap(),
        (1110, false)
    );
    assert_eq!(
        g.namespace_bytes("alice", Some(&shared)).await.unwrap(),
        (1110, true)
    );
    assert_eq!(
        g.namespace_bytes("bob", Some(&own)).await.unwrap(),
        (1000, false)
    );
    assert_eq!(g.namespace_bytes("carol", None).await.unwrap(), (1, false));
    assert_eq!(g.namespace_bytes("ali", None).await.unwrap(), (0, false));
    assert_eq!(
        g.namespace_bytes("nobody", Some(&own)).await.unwrap(),
        (0, false)
    );
}

async fn quotas(db: Db) {
    let g = &db.gc;
    assert_eq!(g.quota("alice").await.unwrap(), None);
    g.quota_set("alice", Some(100)).await.unwrap();
    assert_eq!(g.quota("alice").await.unwrap(), Some(100));
    g.quota_set("alice", Some(0)).await.unwrap();
    assert_eq!(g.quota("alice").await.unwrap(), Some(0));
    g.quota_set("alice", Some(u64::MAX)).await.unwrap();
    assert_eq!(g.quota("alice").await.unwrap(), Some(i64::MAX as u64));
    g.quota_set("alice", None).await.unwrap();
    assert_eq!(g.quota("alice").await.unwrap(), None);
    g.quota_set("nobody", None).await.unwrap();
}

fn rule(repos: &str, tags: &str, keep: Option<i32>, days: Option<i32>) -> RetentionRule {
    RetentionRule {
        id: 0,
        repositories: repos.into(),
        tags: tags.into(),
        keep_tags: keep,
        untagged_days: days,
    }
}

async fn retention_rules_and_tags(db: Db) {
    let g = &db.gc;
    let a = g
        .retention_add(&rule("alice/*", "v*", Some(2), None))
        .await
        .unwrap();
    let b = g
        .retention_add(&rule("bob/app", "*", None, Some(3)))
        .await
        .unwrap();
    let rules = g.retention_rules().await.unwrap();
    assert_eq!(
        rules,
        [
            RetentionRule {
                id: a,
                ..rule("alice/*", "v*", Some(2), None)
            },
            RetentionRule {
                id: b,
                ..rule("bob/app", "*", None, Some(3))
            }
        ]
    );
    assert!(g.retention_remove(b).await.unwrap());
    assert!(!g.retention_remove(b).await.unwrap());
    assert_eq!(g.retention_rules().await.unwrap().len(), 1);

    let c = blob(&db, "alice/app", "config", 1).await;
    for t in ["v1", "v2", "v3", "v4", "latest"] {
        image(&db, "alice/app", t, &[&c], Some(t)).await;
        tick().await;
    }
    let c2 = blob(&db, "alice/x/y", "config", 1).await;
    for t in ["v1", "v2", "v3"] {
        image(&db, "alice/x/y", t, &[&c2], Some(t)).await;
        tick().await;
    }
    let c3 = blob(&db, "bob/app", "config", 1).await;
    for t in ["v1", "v2", "v3"] {
        image(&db, "bob/app", t, &[&c3], Some(t)).await;
    }
    let r = &g.retention_rules().await.unwrap()[0];
    let future = now_ms() + 1000;
    let want = vec![
        Retained::Tag {
            repo: "alice/app".into(),
            tag: "v1".into(),
        },
        Retained::Tag {
            repo: "alice/app".into(),
            tag: "v2".into(),
        },
        Retained::Tag {
            repo: "alice/x/y".into(),
            tag: "v1".into(),
        },
    ];
    assert_eq!(g.retention_tags(r, future, true).await.unwrap(), want);
    assert_eq!(tag_names(&db, "alice/app").await.len(), 5, "dry run");
    // Tags moved after the cutoff are spared (the newest N are counted all the same).
    let v1_time = db
        .meta
        .tag_details(&repo("alice/app"), TagFilter::ALL)
        .await
        .unwrap()
        .unwrap()
        .tags
        .iter()
        .find(|t| t.name == "v1")
        .unwrap()
        .updated_at;
    assert_eq!(
        g.retention_tags(r, v1_time, true).await.unwrap(),
        [Retained::Tag {
            repo: "alice/app".into(),
            tag: "v1".into()
        }]
    );
    assert_eq!(g.retention_tags(r, future, false).await.unwrap(), want);
    assert_eq!(tag_names(&db, "alice/app").await, ["latest", "v3", "v4"]);
    assert_eq!(tag_names(&db, "alice/x/y").await, ["v2", "v3"]);
    assert_eq!(tag_names(&db, "bob/app").await, ["v1", "v2", "v3"]);
    assert!(g.retention_tags(r, future, false).await.unwrap().is_empty());
    // A rule without a tag limit deletes no tag.
    assert!(g
        .retention_tags(&rule("*", "*", None, Some(1)), future, false)
        .await
        .unwrap()
        .is_empty());
}

async fn retention_untagged(db: Db) {
    let g = &db.gc;
    let c = blob(&db, "alice/app", "config", 1).await;
    let tagged = image(&db, "alice/app", "tagged", &[&c], Some("v1")).await;
    let old = image(&db, "alice/app", "old", &[&c], None).await;
    let sig = referrer(&db, "alice/app", "sig", &tagged, "sig").await;
    let c2 = blob(&db, "bob/app", "config", 1).await;
    let bobs = image(&db, "bob/app", "old", &[&c2], None).await;
    tick().await;
    let older_than = now_ms();
    tick().await;
    let young = image(&db, "alice/app", "young", &[&c], None).await;

    let r = rule("alice/*", "*", None, Some(1));
    let want = vec![Retained::Manifest {
        repo: "alice/app".into(),
        digest: old.to_string(),
    }];
    assert_eq!(
        g.retention_untagged(&r, older_than, true).await.unwrap(),
        want
    );
    assert!(db
        .meta
        .manifest_by_digest(&repo("alice/app"), &old)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        g.retention_untagged(&r, older_than, false).await.unwrap(),
        want
    );
    assert!(db
        .meta
        .manifest_by_digest(&repo("alice/app"), &old)
        .await
        .unwrap()
        .is_none());
    for (rp, d) in [
        ("alice/app", &tagged),
        ("alice/app", &sig),
        ("alice/app", &young),
        ("bob/app", &bobs),
    ] {
        assert!(db
            .meta
            .manifest_by_digest(&repo(rp), d)
            .await
            .unwrap()
            .is_some());
    }
    assert!(g
        .retention_untagged(&rule("*", "*", Some(1), None), now_ms() + 1000, false)
        .await
        .unwrap()
        .is_empty());
}

async fn retention_globs_are_literal_but_for_wildcards(db: Db) {
    let g = &db.gc;
    let c = blob(&db, "a_b/app", "c", 1).await;
    image(&db, "a_b/app", "m", &[&c], Some("v_1")).await;
    image(&db, "a_b/app", "m", &[&c], Some("vx1")).await;
    let c = blob(&db, "axb/app", "c", 1).await;
    image(&db, "axb/app", "m", &[&c], Some("v_1")).await;
    let future = now_ms() + 1000;
    // `_` is a character like any other, `?` is one character.
    let got = g
        .retention_tags(&rule("a_b/*", "v_1", Some(0), None), future, true)
        .await
        .unwrap();
    assert_eq!(
        got,
        [Retained::Tag {
            repo: "a_b/app".into(),
            tag: "v_1".into()
        }]
    );
    let got = g
        .retention_tags(&rule("a?b/ap?", "v?1", Some(0), None), future, true)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    let got = g
        .retention_tags(&rule("A_B/*", "*", Some(0), None), future, true)
        .await
        .unwrap();
    assert!(got.is_empty(), "case matters");
}

async fn fsck_helpers(db: Db) {
    let g = &db.gc;
    let c = blob(&db, "alice/app", "config", 1).await;
    let layer = blob(&db, "alice/app", "layer", 2).await;
    let m = image(&db, "alice/app", "m", &[&c, &layer], Some("v1")).await;
    image(&db, "alice/app", "m", &[&c, &layer], Some("v2")).await;
    let idx = index(&db, "alice/app", "idx", &[&m], Some("multi")).await;
    let other = image(&db, "alice/app", "other", &[&c], None).await;

    // Blob rows in digest order, in pages.
    let mut all: Vec<Digest> = vec![
        c.clone(),
        layer.clone(),
        m.clone(),
        idx.clone(),
        other.clone(),
    ];
    all.sort_by_key(|d| d.to_string());
    let first = g.fsck_blob_rows(None, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        all[..2]
    );
    let after = all[1].to_string();
    let rest = g.fsck_blob_rows(Some(&after), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        all[2..]
    );
    let sizes: Vec<u64> = first
        .iter()
        .chain(&rest)
        .filter(|(d, _)| *d == c || *d == m)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        sizes.iter().sum::<u64>(),
        1 + 100,
        "a blob's size, a manifest's size"
    );

    assert!(g.fsck_dangling_refs().await.unwrap().is_empty());
    let users = g.fsck_users_of(&layer).await.unwrap();
    let mut want = vec![
        format!("alice/app@{m} (tags: v1, v2)"),
        format!("alice/app@{idx} (tags: multi)"),
    ];
    want.sort();
    assert_eq!(users, want);
    assert_eq!(
        g.fsck_users_of(&other).await.unwrap(),
        [format!("alice/app@{other} (untagged)")]
    );

    // The layer is broken: forgotten, its manifest now dangles, and so does the index.
    g.fsck_forget_blob(&layer).await.unwrap();
    assert!(db
        .meta
        .repo_blob(&repo("alice/app"), &layer)
        .await
        .unwrap()
        .is_none());
    let dangling = g.fsck_dangling_refs().await.unwrap();
    assert_eq!(dangling.len(), 1);
    assert_eq!(
        (
            dangling[0].repo.as_str(),
            dangling[0].manifest.as_str(),
            dangling[0].child.as_str(),
            dangling[0].is_manifest
        ),
        (
            "alice/app",
            m.to_string().as_str(),
            layer.to_string().as_str(),
            false
        )
    );
    let dropped = g.fsck_drop_dangling().await.unwrap();
    assert_eq!(
        dropped,
        [
            format!("alice/app@{m} (tags: v1, v2)"),
            format!("alice/app@{idx} (tags: multi)")
        ]
    );
    assert!(g.fsck_dangling_refs().await.unwrap().is_empty());
    assert_eq!(tag_names(&db, "alice/app").await, Vec::<String>::new());
    assert!(db
        .meta
        .manifest_by_digest(&repo("alice/app"), &other)
        .await
        .unwrap()
        .is_some());

    // A manifest's own bytes broken: the manifest goes with its tags.
    let m2 = image(&db, "alice/app", "m2", &[&c], Some("v3")).await;
    g.fsck_forget_blob(&m2).await.unwrap();
    assert!(db
        .meta
        .manifest_by_digest(&repo("alice/app"), &m2)
        .await
        .unwrap()
        .is_none());
    assert!(g.fsck_drop_dangling().await.unwrap().is_empty());
}

async fn migrations_are_idempotent_and_concurrent(db: Db) {
    // Opening again (a restart) and several at once (replicas starting together).
    let (a, b, c) = tokio::join!(db.replica(), db.replica(), db.replica());
    for r in [&a, &b, &c] {
        r.meta.ping().await.unwrap();
        assert_eq!(r.accounts.user_count().await.unwrap(), 0);
    }
    if let Place::Postgres(pg) = &*db.place {
        let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let all: Vec<i64> = super::postgres::MIGRATIONS
            .iter()
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(versions, all);
        assert_eq!(all, (1..=all.len() as i64).collect::<Vec<i64>>());
    }
}

// ---------------------------------------------------------------------------------------
// Replicas racing

/// A push and the collector racing for one blob, many times over: whatever the order,
/// a push told `Linked` finds its file there, and a row never outlives its file.
async fn push_racing_the_collector_never_leaves_a_row_without_a_file(db: Db) {
    let other = db.replica().await;
    let files = Files::default();
    for i in 0..25 {
        let d = dg(&format!("race-{i}"));
        files.put(&d);
        let linked = db
            .meta
            .link_blob(&repo("alice/app"), &d, 1, yes(), None)
            .await
            .unwrap();
        assert_eq!(linked, Linked::Linked);
        tick().await;
        let cutoff = now_ms();
        tick().await;

        let gc = other.gc.clone();
        let (f, dd) = (files.clone(), d.clone());
        let collector = tokio::spawn(async move {
            gc.gc_forget_blobs(std::slice::from_ref(&dd), cutoff)
                .await
                .unwrap();
            let f2 = f.clone();
            let delete = move |d: Digest| -> futures_util::future::BoxFuture<
                'static,
                anyhow::Result<bool>,
            > {
                let f = f2.clone();
                Box::pin(async move { Ok(f.0.lock().unwrap().remove(&d)) })
            };
            gc.gc_delete_files(100, &delete).await.unwrap();
        });
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let meta = db.meta.clone();
        let (f, dd) = (files.clone(), d.clone());
        let pusher = tokio::spawn(async move {
            meta.link_blob(&repo("alice/app"), &dd, 1, f.presence(&dd), None)
                .await
                .unwrap()
        });
        collector.await.unwrap();
        let linked = pusher.await.unwrap();
        let known = db.gc.blobs_known(std::slice::from_ref(&d)).await.unwrap()[0];
        match linked {
            Linked::Linked => {
                assert!(files.has(&d), "round {i}: push acknowledged, file deleted");
                assert!(known, "round {i}: push acknowledged, row gone");
            }
            Linked::Vanished => assert!(!files.has(&d) && !known, "round {i}"),
        }
        if known {
            assert!(files.has(&d), "round {i}: a row without a file");
        }
    }
}

/// A manifest push referencing a layer while the collector forgets that layer: the
/// manifest is either stored with the layer kept, or refused.
async fn manifest_racing_the_collector_never_dangles(db: Db) {
    let other = db.replica().await;
    for i in 0..25 {
        let layer = blob(&db, "alice/app", &format!("layer-{i}"), 1).await;
        tick().await;
        let cutoff = now_ms();
        let gc = other.gc.clone();
        let l = layer.clone();
        let collector =
            tokio::spawn(async move { gc.gc_forget_blobs(&[l], cutoff).await.unwrap() });
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let meta = db.meta.clone();
        let l = layer.clone();
        let pusher = tokio::spawn(async move {
            let d = dg(&format!("m-{i}"));
            let m = NewManifest {
                digest: &d,
                media_type: IMAGE,
                size: 1,
                artifact_type: None,
                subject: None,
                annotations: None,
                blobs: vec![&l],
                children: vec![],
                pushed_by: None,
            };
            let slow: Presence<'static> = Box::pin(async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                Ok(true)
            });
            meta.put_manifest(&repo("alice/app"), &m, Some(&tag(&format!("t{i}"))), slow)
                .await
                .unwrap()
        });
        let forgotten = collector.await.unwrap();
        let put = pusher.await.unwrap();
        match put {
            PutManifest::Stored => assert!(
                forgotten.is_empty(),
                "round {i}: stored, yet its layer forgotten"
            ),
            PutManifest::MissingReference(d) => {
                assert_eq!(d, layer);
                assert_eq!(forgotten.len(), 1);
            }
            PutManifest::Vanished => panic!("round {i}: vanished"),
        }
        assert!(
            db.gc.fsck_dangling_refs().await.unwrap().is_empty(),
            "round {i}"
        );
    }
}

/// Two replicas pushing different manifests under one tag at once: both succeed, the
/// tag names one of them, and nothing is left half-written.
async fn replicas_racing_on_one_tag(db: Db) {
    let other = db.replica().await;
    let c = blob(&db, "alice/app", "config", 1).await;
    for i in 0..20 {
        let mut tasks = Vec::new();
        for (j, r) in [db.clone(), other.clone()].into_iter().enumerate() {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let d = dg(&format!("m-{i}-{j}"));
                let m = NewManifest {
                    digest: &d,
                    media_type: IMAGE,
                    size: 1,
                    artifact_type: None,
                    subject: None,
                    annotations: None,
                    blobs: vec![&c],
                    children: vec![],
                    pushed_by: None,
                };
                let put = r
                    .meta
                    .put_manifest(&repo("alice/app"), &m, Some(&tag("latest")), yes())
                    .await
                    .unwrap();
                (put, d)
            }));
        }
        let mut pushed = Vec::new();
        for t in tasks {
            let (put, d) = t.await.unwrap();
            assert_eq!(put, PutManifest::Stored);
            pushed.push(d);
        }
        let now = db
            .meta
            .manifest_by_tag(&repo("alice/app"), &tag("latest"))
            .await
            .unwrap()
            .unwrap();
        assert!(pushed.contains(&now.digest), "round {i}");
        let page = db
            .meta
            .tag_details(&repo("alice/app"), TagFilter::ALL)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.total, 1);
    }
    // Two replicas creating one new repository at once.
    for i in 0..10 {
        let name = repo(&format!("new/r{i}"));
        let (a, b) = tokio::join!(
            db.meta.link_blob(&name, &c, 1, yes(), None),
            other.meta.link_blob(&name, &c, 1, yes(), None)
        );
        assert_eq!((a.unwrap(), b.unwrap()), (Linked::Linked, Linked::Linked));
    }
    let p = db
        .meta
        .catalog(Some(&["new".to_string()]), None, 100)
        .await
        .unwrap();
    assert_eq!(p.items.len(), 10);
}

/// Creates `name` with a natural-language default collation where the server can (ICU,
/// PostgreSQL 15+), under which `ORDER BY` is not byte order: listings must still page
/// in byte order, which only the schema's `COLLATE "C"` gives.
async fn create_database(c: &mut sqlx::PgConnection, name: &str) {
    let icu = format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' \
         LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
    );
    if sqlx::raw_sql(&icu).execute(&mut *c).await.is_err() {
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut *c)
            .await
            .unwrap();
    }
}

/// One replica deletes a repository while the other pushes into it: each finishes as it
/// would one after the other (no foreign-key failure, no deadlock, nothing dangling).
async fn deleting_a_repository_while_pushing_to_it_fails_neither(db: Db) {
    let other = db.replica().await;
    for i in 0..20 {
        let name = format!("alice/r{i}");
        let c = blob(&db, &name, "config", 1).await;
        image(&db, &name, "m0", &[&c], Some("v0")).await;
        let r = repo(&name);
        let (meta, c2, r2) = (db.meta.clone(), c.clone(), r.clone());
        let pusher = tokio::spawn(async move {
            let linked = meta.link_blob(&r2, &c2, 1, yes(), None).await.unwrap();
            let d = dg(&format!("m-{i}"));
            let m = NewManifest {
                digest: &d,
                media_type: IMAGE,
                size: 1,
                artifact_type: None,
                subject: None,
                annotations: None,
                blobs: vec![&c2],
                children: vec![],
                pushed_by: None,
            };
            let put = meta
                .put_manifest(&r2, &m, Some(&tag("v1")), yes())
                .await
                .unwrap();
            (linked, put)
        });
        let deleter = {
            let (meta, r) = (other.meta.clone(), r.clone());
            tokio::spawn(async move { meta.delete_repository(&r).await.unwrap() })
        };
        let (linked, put) = pusher.await.unwrap();
        assert!(deleter.await.unwrap(), "round {i}");
        assert_eq!(linked, Linked::Linked);
        // Stored, or refused because the link went with the repository in between.
        assert!(
            matches!(put, PutManifest::Stored | PutManifest::MissingReference(_)),
            "round {i}: {put:?}"
        );
        if let Some(row) = db.meta.manifest_by_tag(&r, &tag("v1")).await.unwrap() {
            assert_eq!(
                db.meta.repo_blob(&r, &c).await.unwrap(),
                Some(1),
                "round {i}"
            );
            assert_eq!(row.digest, dg(&format!("m-{i}")));
        }
        assert!(
            db.gc.fsck_dangling_refs().await.unwrap().is_empty(),
            "round {i}"
        );
    }
}

/// Upgrading from a Berth that kept the token key in the data directory: the file's
/// key goes into the database (tokens it signed stay valid), and once the database has
/// a key, that one wins over any file.
async fn signer_imports_a_legacy_key_file_once(db: Db) {
    use crate::auth::jwt::{generate_key_pem, Signer};
    let ttl = Duration::from_secs(300);
    let dir = tempfile::tempdir().unwrap();
    let old_pem = generate_key_pem().unwrap();
    std::fs::write(dir.path().join("token-signing-key.pem"), &old_pem).unwrap();
    let old = Signer::from_pem(&old_pem, "berth", ttl).unwrap();
    let token = old.issue("alice", 1, None, vec![]).unwrap().token;

    let imported = Signer::open(db.accounts.as_ref(), dir.path(), "berth", ttl)
        .await
        .unwrap();
    assert!(
        imported.verify(&token).is_some(),
        "a token from before the upgrade"
    );
    // Another replica, without the file (its own data directory), gets the same key.
    let elsewhere = tempfile::tempdir().unwrap();
    let replica = db.replica().await;
    let shared = Signer::open(replica.accounts.as_ref(), elsewhere.path(), "berth", ttl)
        .await
        .unwrap();
    assert!(shared.verify(&token).is_some());
    let t2 = shared.issue("bob", 2, None, vec![]).unwrap().token;
    assert!(imported.verify(&t2).is_some());
    // A different file later changes nothing.
    std::fs::write(
        elsewhere.path().join("token-signing-key.pem"),
        generate_key_pem().unwrap(),
    )
    .unwrap();
    let again = Signer::open(db.accounts.as_ref(), elsewhere.path(), "berth", ttl)
        .await
        .unwrap();
    assert!(again.verify(&token).is_some());
}

/// A NUL can reach the metadata from a client (a Basic user name, a `last` or
/// `artifactType` parameter, a string in a manifest): it must answer as any other
/// unknown value does, not fail the statement (PostgreSQL's text can't hold NUL).
async fn nul_in_client_text_is_harmless(db: Db) {
    let c = blob(&db, "alice/app", "config", 1).await;
    let subject = image(&db, "alice/app", "m", &[&c], Some("a")).await;
    for t in ["a0", "a1", "b"] {
        image(&db, "alice/app", "m", &[&c], Some(t)).await;
    }
    let r = repo("alice/app");
    assert!(db.accounts.user_by_name("ad\0min").await.unwrap().is_none());
    assert!(matches!(
        db.accounts.user_create("x\0y", "h", false).await.unwrap(),
        Created::Ok(_)
    ));
    assert!(db.accounts.team("x\0").await.unwrap().is_none());
    assert!(!db.accounts.user_set_password("x\0", "h").await.unwrap());
    assert!(db.accounts.tokens(Some("x\0")).await.unwrap().is_empty());
    db.accounts
        .audit(AuditEntry {
            detail: Some("bad \0 input".into()),
            actor: Some("x\0".into()),
            ..entry(1, "login_failed")
        })
        .await
        .unwrap();
    let page = db.meta.tags(&r, Some("a\0zz"), 10).await.unwrap().unwrap();
    assert_eq!(
        page.items,
        ["a0", "a1", "b"],
        "a cursor after \"a\", before \"a0\""
    );
    let cat = db
        .meta
        .catalog(None, Some("alice/app\0"), 10)
        .await
        .unwrap();
    assert!(cat.items.is_empty());
    let (repos, _) = db
        .meta
        .repositories(None, Some("app\0"), None, 10)
        .await
        .unwrap();
    assert!(repos.is_empty());
    let f = TagFilter {
        last: Some("a\0"),
        n: 10,
        digest: Some("sha256:\0"),
    };
    assert!(db
        .meta
        .tag_details(&r, f)
        .await
        .unwrap()
        .unwrap()
        .tags
        .is_empty());
    assert!(db
        .meta
        .referrers(&r, &subject, Some("x\0"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(db.meta.uploads_open("user:x\0").await.unwrap(), 0);
    assert_eq!(db.gc.quota("ali\0ce").await.unwrap(), None);
    assert_eq!(
        db.gc.namespace_bytes("ali\0ce", None).await.unwrap(),
        (0, false)
    );
    let d = dg("odd");
    let m = NewManifest {
        digest: &d,
        media_type: IMAGE,
        size: 1,
        artifact_type: Some("application/x\0y"),
        subject: Some(&subject),
        annotations: None,
        blobs: vec![&c],
        children: vec![],
        pushed_by: Some("x\0y"),
    };
    let put = db
        .meta
        .put_manifest(&r, &m, Some(&tag("odd")), yes())
        .await
        .unwrap();
    assert_eq!(put, PutManifest::Stored);
}

/// A real conflict between two connections to `db`'s database, as the error the loser
/// got: on PostgreSQL a deadlock (40P01), on SQLite a write lock still held when the
/// busy timeout (zero here) ran out.
async fn conflict(db: &Db) -> anyhow::Error {
    match &*db.place {
        Place::Postgres(pg) => {
            let mut a = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            let mut b = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS conflict_test (id INT PRIMARY KEY, v INT NOT NULL);
                 INSERT INTO conflict_test VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING",
            )
            .execute(&mut a)
            .await
            .unwrap();
            for c in [&mut a, &mut b] {
                sqlx::raw_sql("SET deadlock_timeout = '10ms'")
                    .execute(c)
                    .await
                    .unwrap();
            }
            let update = "UPDATE conflict_test SET v = v + 1 WHERE id = $1";
            let (mut ta, mut tb) = (a.begin().await.unwrap(), b.begin().await.unwrap());
            sqlx::query(update).bind(1).execute(&mut *ta).await.unwrap();
            sqlx::query(update).bind(2).execute(&mut *tb).await.unwrap();
            let (ra, rb) = tokio::join!(
                sqlx::query(update).bind(2).execute(&mut *ta),
                sqlx::query(update).bind(1).execute(&mut *tb)
            );
            match (ra, rb) {
                (Err(e), Ok(_)) | (Ok(_), Err(e)) => e.into(),
                other => panic!("expected exactly one deadlock victim, got {other:?}"),
            }
        }
        Place::Sqlite(dir) => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("berth.db"))
                .busy_timeout(Duration::ZERO);
            let mut a = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            let mut b = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut a)
                .await
                .unwrap();
            let e = sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut b)
                .await
                .expect_err("a second writer while the first holds the lock");
            sqlx::raw_sql("ROLLBACK").execute(&mut a).await.unwrap();
            e.into()
        }
    }
}

/// The engine's own conflict errors are told apart from other failures, and a
/// PostgreSQL transaction that lost one runs again, at most `CONFLICT_TRIES` times in
/// all; SQLite's, which waited out its busy timeout already, does not.
async fn conflicts_are_recognised_and_run_again(db: Db) {
    use super::{conflict as kind, retry_conflicts, Conflict, CONFLICT_TRIES};
    let expected = match &*db.place {
        Place::Postgres(_) => Conflict::Aborted,
        Place::Sqlite(_) => Conflict::Busy,
    };
    let e = conflict(&db).await;
    assert_eq!(kind(&e), Some(expected), "{e:#}");
    let e = e.context("recording a blob");
    assert_eq!(kind(&e), Some(expected));
    // What no retry got through is a 503 the client may send again, not a 500.
    let answer = axum::response::IntoResponse::into_response(crate::api::error::ApiError::from(e));
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    let wrong = match &*db.place {
        Place::Postgres(pg) => {
            let mut c = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::raw_sql("SELECT * FROM no_such_table")
                .execute(&mut c)
                .await
                .map(|_| ())
        }
        Place::Sqlite(dir) => {
            let mut c = sqlx::SqliteConnection::connect(&format!(
                "sqlite://{}",
                dir.path().join("berth.db").display()
            ))
            .await
            .unwrap();
            sqlx::raw_sql("SELECT * FROM no_such_table")
                .execute(&mut c)
                .await
                .map(|_| ())
        }
    };
    assert_eq!(kind(&wrong.unwrap_err().into()), None);
    assert_eq!(kind(&anyhow::anyhow!("disk full")), None);

    // Loses once, then goes through (PostgreSQL); reported at once (SQLite).
    let runs = Arc::new(Mutex::new(0));
    let got = retry_conflicts(|| {
        let (db, runs) = (db.clone(), runs.clone());
        async move {
            *runs.lock().unwrap() += 1;
            if *runs.lock().unwrap() == 1 {
                return Err(conflict(&db).await);
            }
            db.meta.catalog(None, None, 10).await.map(|p| p.items.len())
        }
    })
    .await;
    let runs_now = *runs.lock().unwrap();
    match expected {
        Conflict::Aborted => assert_eq!((got.unwrap(), runs_now), (0, 2)),
        Conflict::Busy => {
            assert_eq!(kind(&got.unwrap_err()), Some(Conflict::Busy));
            assert_eq!(runs_now, 1);
        }
    }

    // Always loses: tried CONFLICT_TRIES times, and the conflict is what is reported.
    if expected == Conflict::Aborted {
        *runs.lock().unwrap() = 0;
        let e = retry_conflicts(|| {
            let (db, runs) = (db.clone(), runs.clone());
            async move {
                *runs.lock().unwrap() += 1;
                Err::<(), _>(conflict(&db).await)
            }
        })
        .await
        .unwrap_err();
        assert_eq!(kind(&e), Some(Conflict::Aborted));
        assert_eq!(*runs.lock().unwrap(), CONFLICT_TRIES);
    }

    // Any other failure is not run again.
    *runs.lock().unwrap() = 0;
    let e = retry_conflicts(|| {
        let runs = runs.clone();
        async move {
            *runs.lock().unwrap() += 1;
            Err::<(), _>(anyhow::anyhow!("disk full"))
        }
    })
    .await
    .unwrap_err();
    assert_eq!(
        (e.to_string(), *runs.lock().unwrap()),
        ("disk full".into(), 1)
    );
}
