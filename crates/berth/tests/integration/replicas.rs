//! Two replicas on one PostgreSQL database and one S3 bucket, as behind a load
//! balancer: an upload continues on whichever replica its next request reaches, even
//! after the replica that began it was killed. Skipped (loudly) without the test
//! services. Failed sign-ins are throttled across replicas.

use crate::common::{postgres_url, TestApp};
use crate::helpers::*;

/// The S3 store's multipart part size.
const PART: usize = blobstore::s3::DEFAULT_PART_SIZE;

async fn patch(app: &TestApp, at: &reqwest::Url, start: usize, chunk: &[u8]) -> reqwest::Response {
    app.client
        .patch(app_url(app, at))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replica_killed_mid_upload_the_client_resumes_on_the_other() {
    let test = "a_replica_killed_mid_upload_the_client_resumes_on_the_other";
    if postgres_url(test).is_none() {
        return;
    }
    let Some(builder) = TestApp::builder().postgres().s3() else {
        return;
    };
    let mut a = builder.start().await;
    let b = a.start_replica().await;
    let repo = unique_repo("replicas");
    // Three chunks that straddle part boundaries: a whole part plus a tail is stored
    // when `a` dies; the rest goes through `b`.
    let data = random_bytes(2 * PART + PART / 2 + 12_345);
    let digest = sha256_digest(&data);
    let (c1, c2) = (PART + PART / 3, 2 * PART + 100);

    let upload = start_upload(&a, &repo).await;
    let r = patch(&a, &upload, 0, &data[..c1]).await;
    assert_eq!(r.status(), 202, "first chunk on a");
    let upload = location(&r);
    a.kill();

    // The session is where `a` left it, as seen from `b`.
    let status_url = app_url(&b, &upload);
    let r = b.client.get(status_url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(upload_range_end(&r), c1 as u64 - 1);
    // A chunk that doesn't start where the upload ends is refused, and changes nothing.
    // (A small one: the 416 is answered before the body is read, and megabytes still
    // unread when the connection closes would reset it under the client.)
    let r = patch(&b, &upload, c1 + 1, &data[c1 + 1..c1 + 4097]).await;
    assert_eq!(r.status(), 416);
    let r = patch(&b, &upload, c1, &data[c1..c2]).await;
    assert_eq!(r.status(), 202, "second chunk on b");
    let upload = location(&r);

    // `a` comes back; the last chunk and the commit go to it again.
    a.respawn().await;
    let r = patch(&a, &upload, c2, &data[c2..]).await;
    assert_eq!(r.status(), 202, "last chunk on a");
    let upload = location(&r);
    let r = a
        .client
        .put(with_query(app_url(&a, &upload), "digest", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "commit on a");
    assert_blob(&b, &repo, &digest, &data).await;
    assert_blob(&a, &repo, &digest, &data).await;
    drop(b);
}

/// `at` (an upload URL from some replica) on `app`: the same path and query on every
/// replica, only the host differs.
fn app_url(app: &TestApp, at: &reqwest::Url) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&app.url(at.path())).unwrap();
    url.set_query(at.query());
    url
}

/// Failed sign-ins are counted in the shared database: five wrong passwords spread over
/// two replicas use up the free failures on both, so a load balancer handing each guess
/// to the next replica gives an attacker no more than one registry would.
#[tokio::test]
async fn failed_sign_ins_on_two_replicas_throttle_together() {
    let test = "failed_sign_ins_on_two_replicas_throttle_together";
    let Some(a) = TestApp::builder().auth().start_postgres(test).await else {
        return;
    };
    let b = a.start_replica().await;
    let wrong = a.basic_client("admin", "not-the-password");
    for i in 0..5 {
        let app = if i % 2 == 0 { &a } else { &b };
        let r = wrong.get(app.url("/v2/")).send().await.unwrap();
        assert_eq!(r.status(), 401, "failure {} on replica {}", i + 1, i % 2);
    }
    // The sixth attempt waits on either replica, even with the right password.
    let right = a.basic_client("admin", crate::common::ADMIN_PASSWORD);
    for app in [&a, &b] {
        let r = right.get(app.url("/v2/")).send().await.unwrap();
        assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());
    }
    // Once the back-off (1 s after the fifth failure) has passed, either lets it in.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for app in [&b, &a] {
        let r = right.get(app.url("/v2/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    drop(b);
}
