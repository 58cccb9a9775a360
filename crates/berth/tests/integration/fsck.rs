//! `berth fsck [--repair]` (issue 6): detects a corrupted and a missing blob and a size
//! that disagrees with the metadata, names the images they break, quarantines them
//! with `--repair`, after which fsck is clean and a push of the same image repairs it.

use std::path::PathBuf;

use crate::common::TestApp;
use crate::helpers::*;

fn blob_file(app: &TestApp, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    app.data_dir()
        .join("blobstore/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

fn fsck(app: &TestApp, repair: bool) -> (bool, String) {
    let mut args = vec!["fsck"];
    if repair {
        args.push("--repair");
    }
    let out = app.cli(&args, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn fsck_finds_corrupt_and_missing_blobs_and_repair_makes_it_clean() {
    let app = TestApp::start().await;
    if app.s3_store().is_some() {
        eprintln!("\n*** SKIPPED: this fsck test damages files in the data directory; the server runs on S3 ***\n");
        return;
    }
    if skip_external("fsck", "runs the berth CLI on the data directory") {
        return;
    }
    let good = push_image(&app, "fsck/good", "v1").await;
    let bad = push_image(&app, "fsck/bad", "v1").await;
    let gone = push_image(&app, "fsck/gone", "v1").await;
    let (ok, out) = fsck(&app, false);
    assert!(ok && out.contains("fsck: clean"), "{out}");

    // Flip bytes in one layer (same size), delete another layer's file.
    let (_, corrupt) = &bad.layers[0];
    let path = blob_file(&app, corrupt);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (_, missing) = &gone.layers[0];
    std::fs::remove_file(blob_file(&app, missing)).unwrap();

    let (ok, out) = fsck(&app, false);
    assert!(!ok, "problems exit non-zero:\n{out}");
    assert!(out.contains(&format!("{corrupt}: CORRUPT")), "{out}");
    assert!(out.contains(&format!("{missing}: MISSING")), "{out}");
    assert!(
        out.contains(&format!("used by fsck/bad@{} (tags: v1)", bad.digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("used by fsck/gone@{} (tags: v1)", gone.digest)),
        "{out}"
    );
    assert!(out.contains("2 problems"), "{out}");
    assert!(
        !out.contains(&good.digest),
        "the good image is not reported:\n{out}"
    );

    let (ok, out) = fsck(&app, true);
    assert!(ok, "{out}");
    assert!(
        out.contains("1 blobs quarantined") && out.contains("2 forgotten"),
        "{out}"
    );
    assert!(
        out.contains(&format!("deleted broken image fsck/bad@{}", bad.digest)),
        "{out}"
    );
    // The corrupt bytes are kept for a person to look at, out of the store.
    let quarantined = std::fs::read_dir(app.data_dir().join("blobstore/quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1);

    let (ok, out) = fsck(&app, false);
    assert!(ok && out.contains("fsck: clean"), "after repair:\n{out}");
    // Broken images answer MANIFEST_UNKNOWN now, the good one is untouched ...
    let resp = app
        .client
        .get(app.url("/v2/fsck/bad/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(
        get_blob(&app, "fsck/good", &good.layers[0].1)
            .await
            .status(),
        200
    );
    // ... and pushing the image again repairs it completely.
    for (data, digest) in &bad.layers {
        assert_eq!(
            head_blob(&app, "fsck/bad", digest).await.status() == 200,
            digest != corrupt
        );
        push_blob(&app, "fsck/bad", data).await;
    }
    put_manifest_ok(&app, "fsck/bad", "v1", bad.media_type, &bad.manifest).await;
    let resp = get_blob(&app, "fsck/bad", corrupt).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), *corrupt);
    let (ok, out) = fsck(&app, false);
    assert!(ok && out.contains("fsck: clean"), "{out}");
}

#[tokio::test]
async fn fsck_reports_a_size_the_metadata_disagrees_with() {
    let app = TestApp::start().await;
    if app.s3_store().is_some() {
        eprintln!("\n*** SKIPPED: this fsck test damages files in the data directory; the server runs on S3 ***\n");
        return;
    }
    if skip_external("fsck", "runs the berth CLI on the data directory") {
        return;
    }
    let img = push_image(&app, "fsck/size", "v1").await;
    let (_, layer) = &img.layers[0];
    let path = blob_file(&app, layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"trailing garbage");
    std::fs::write(&path, &bytes).unwrap();
    let (ok, out) = fsck(&app, false);
    assert!(!ok);
    assert!(out.contains(&format!("{layer}: SIZE")), "{out}");
    assert!(out.contains(&format!("{layer}: CORRUPT")), "{out}");
}
