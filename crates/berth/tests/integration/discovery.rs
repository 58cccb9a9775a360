//! Content discovery: the API version check, health probes, tag lists and `_catalog`
//! with `n`/`last`/`Link` pagination, and the referrers API with `artifactType` filters.

use crate::common::TestApp;
use crate::helpers::*;
use reqwest::Url;
use serde_json::{json, Value};

#[tokio::test]
async fn api_version_check_is_200_with_registry_2_0_header() {
    let app = TestApp::start().await;
    let resp = app.client.get(app.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
}

#[tokio::test]
async fn health_and_readiness_probes_are_200() {
    if skip_external(
        "health_and_readiness_probes_are_200",
        "Berth-only endpoints",
    ) {
        return;
    }
    let app = TestApp::start().await;
    for path in ["/healthz", "/readyz"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
    }
}

// ---------------------------------------------------------------------------------
// Tags

/// Pushes one image and tags it with every tag in `tags`.
async fn push_tags(app: &TestApp, repo: &str, tags: &[&str]) {
    let img = make_image(app, repo).await;
    for tag in tags {
        put_manifest_ok(app, repo, tag, OCI_MANIFEST, &img.manifest).await;
    }
}

struct Page {
    items: Vec<String>,
    next: Option<Url>,
}

/// GETs a tag list or catalog page; checks 200 and the `Link` syntax
/// (`<URL>; rel="next"`), resolving its URL against the request.
async fn get_page(app: &TestApp, u: Url, field: &str) -> Page {
    let resp = app.client.get(u.clone()).send().await.unwrap();
    let status = resp.status();
    let link = header(&resp, "link");
    let body = resp.bytes().await.unwrap();
    assert_eq!(status, 200, "GET {u}: {}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("JSON body");
    let items = match &v[field] {
        Value::Array(a) => a.iter().map(|t| t.as_str().unwrap().to_string()).collect(),
        other => panic!("GET {u}: \"{field}\" is not a list: {other}"),
    };
    let next = link.map(|l| {
        let (target, params) = l
            .trim()
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .unwrap_or_else(|| panic!("Link {l:?} is not <URL>; rel=\"next\""));
        assert!(
            params.replace(' ', "").contains("rel=\"next\""),
            "Link {l:?} lacks rel=\"next\""
        );
        u.join(target)
            .unwrap_or_else(|e| panic!("Link target {target:?} does not resolve: {e}"))
    });
    Page { items, next }
}

fn query_param(u: &Url, key: &str) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn tag_list_is_sorted() {
    let app = TestApp::start().await;
    let repo = unique_repo("tags");
    let tags = ["v2", "alpha", "v10", "beta", "1.0", "latest", "a-b", "a.b"];
    push_tags(&app, &repo, &tags).await;

    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        header(&resp, "link").is_none(),
        "a complete list has no Link"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["name"], json!(repo));
    assert_eq!(
        v["tags"],
        json!(["1.0", "a-b", "a.b", "alpha", "beta", "latest", "v10", "v2"])
    );
}

#[tokio::test]
async fn tag_list_with_mixed_case_is_in_lexical_or_asciibetical_order() {
    let app = TestApp::start().await;
    let repo = unique_repo("tags");
    push_tags(&app, &repo, &["b", "B", "a", "C"]).await;
    let page = get_page(&app, url(&app, &format!("/v2/{repo}/tags/list")), "tags").await;
    let ascii = vec!["B", "C", "a", "b"];
    let mut lexical = page.items.clone();
    lexical.sort_by_key(|t| t.to_lowercase());
    assert!(
        page.items == ascii || page.items == lexical,
        "tags {:?} are neither ASCIIbetical nor case-insensitive order",
        page.items
    );
}

#[tokio::test]
async fn tag_list_pagination_follows_link_headers() {
    let app = TestApp::start().await;
    let repo = unique_repo("tags");
    let mut tags = vec!["t1", "t2", "t3", "t4", "t5", "t6", "t7"];
    push_tags(&app, &repo, &tags).await;
    tags.sort();

    let first = get_page(
        &app,
        url(&app, &format!("/v2/{repo}/tags/list?n=3")),
        "tags",
    )
    .await;
    assert_eq!(first.items, ["t1", "t2", "t3"]);
    let next = first
        .next
        .expect("more tags remain: Link rel=\"next\" expected");
    assert_eq!(next.path(), format!("/v2/{repo}/tags/list"), "Link path");
    assert_eq!(
        query_param(&next, "n").as_deref(),
        Some("3"),
        "Link keeps n"
    );
    assert_eq!(
        query_param(&next, "last").as_deref(),
        Some("t3"),
        "Link last"
    );

    let second = get_page(&app, next, "tags").await;
    assert_eq!(second.items, ["t4", "t5", "t6"]);
    let third = get_page(&app, second.next.expect("Link to the third page"), "tags").await;
    assert_eq!(third.items, ["t7"]);
    assert!(third.next.is_none(), "the last page has no Link");
}

#[tokio::test]
async fn tag_list_last_without_n_returns_the_rest() {
    let app = TestApp::start().await;
    let repo = unique_repo("tags");
    push_tags(&app, &repo, &["a", "b", "c", "d"]).await;
    let page = get_page(
        &app,
        url(&app, &format!("/v2/{repo}/tags/list?last=b")),
        "tags",
    )
    .await;
    assert_eq!(page.items, ["c", "d"]);
    assert!(page.next.is_none());

    // `last` need not be an existing tag: it is a position in the order.
    let page = get_page(
        &app,
        url(&app, &format!("/v2/{repo}/tags/list?n=1&last=bb")),
        "tags",
    )
    .await;
    assert_eq!(page.items, ["c"]);
}

#[tokio::test]
async fn tag_list_with_n_zero_is_empty_without_link() {
    let app = TestApp::start().await;
    let repo = unique_repo("tags");
    push_tags(&app, &repo, &["a", "b"]).await;
    let page = get_page(
        &app,
        url(&app, &format!("/v2/{repo}/tags/list?n=0")),
        "tags",
    )
    .await;
    assert!(
        page.items.is_empty(),
        "n=0 gives an empty list, got {:?}",
        page.items
    );
    assert!(page.next.is_none(), "n=0 MUST NOT include a Link header");
}

#[tokio::test]
async fn tag_list_with_n_beyond_the_end_has_no_link() {
    let app = TestApp::start().await;
    let repo = unique_repo("tags");
    push_tags(&app, &repo, &["a", "b", "c"]).await;
    let page = get_page(
        &app,
        url(&app, &format!("/v2/{repo}/tags/list?n=10")),
        "tags",
    )
    .await;
    assert_eq!(page.items, ["a", "b", "c"]);
    assert!(page.next.is_none());
    let page = get_page(
        &app,
        url(&app, &format!("/v2/{repo}/tags/list?n=2&last=c")),
        "tags",
    )
    .await;
    assert!(page.items.is_empty());
    assert!(page.next.is_none());
}

#[tokio::test]
async fn tag_list_of_unknown_repository_is_404_name_unknown() {
    let app = TestApp::start().await;
    let repo = unique_repo("nothing-here");
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 404, "NAME_UNKNOWN").await;
}

// ---------------------------------------------------------------------------------
// Catalog

#[tokio::test]
async fn catalog_is_sorted_and_paginated() {
    let app = TestApp::start().await;
    let prefix = format!("catalog-{}", unique());
    let names: Vec<String> = ["r5", "r1", "r4", "r2", "r3"]
        .iter()
        .map(|r| format!("{prefix}/{r}"))
        .collect();
    for name in &names {
        push_image(&app, name, "latest").await;
    }
    let mut sorted = names.clone();
    sorted.sort();

    // Start right before our names: `last` is a position, not necessarily a repository.
    let first = get_page(
        &app,
        with_query(
            with_query(url(&app, "/v2/_catalog"), "n", "2"),
            "last",
            &prefix,
        ),
        "repositories",
    )
    .await;
    assert_eq!(first.items, sorted[0..2]);
    let next = first.next.expect("more repositories remain: Link expected");
    assert_eq!(next.path(), "/v2/_catalog");
    assert_eq!(query_param(&next, "n").as_deref(), Some("2"));
    assert_eq!(query_param(&next, "last"), Some(sorted[1].clone()));
    let second = get_page(&app, next, "repositories").await;
    assert_eq!(second.items, sorted[2..4]);
    let third = get_page(&app, second.next.expect("Link"), "repositories").await;
    assert_eq!(third.items[0], sorted[4]);

    // The whole catalog, page by page, is sorted and contains our names.
    let mut all = Vec::new();
    let mut next = Some(with_query(url(&app, "/v2/_catalog"), "n", "3"));
    let mut pages = 0;
    while let Some(u) = next {
        let page = get_page(&app, u, "repositories").await;
        assert!(page.items.len() <= 3);
        all.extend(page.items);
        next = page.next;
        pages += 1;
        assert!(pages < 10_000, "catalog pagination does not end");
    }
    let mut check = all.clone();
    check.sort();
    check.dedup();
    assert_eq!(all, check, "catalog is sorted without duplicates");
    for name in &names {
        assert!(all.contains(name), "{name} missing from the catalog");
    }
    if !app.is_external() {
        assert_eq!(
            all, sorted,
            "a fresh registry lists exactly what was pushed"
        );
        let page = get_page(&app, url(&app, "/v2/_catalog"), "repositories").await;
        assert_eq!(page.items, sorted);
        assert!(page.next.is_none());
    }

    let page = get_page(&app, url(&app, "/v2/_catalog?n=0"), "repositories").await;
    assert!(page.items.is_empty());
    assert!(page.next.is_none());
}

// ---------------------------------------------------------------------------------
// Referrers

async fn get_referrers(
    app: &TestApp,
    repo: &str,
    digest: &str,
    query: &str,
) -> (reqwest::Response, Url) {
    let u = url(app, &format!("/v2/{repo}/referrers/{digest}{query}"));
    (app.client.get(u.clone()).send().await.unwrap(), u)
}

/// All descriptors of a referrers response (following `Link` pages), after checking it
/// is a 200 OCI index.
async fn referrers(
    app: &TestApp,
    repo: &str,
    digest: &str,
    query: &str,
) -> (Vec<Value>, Option<String>) {
    let (mut resp, _) = get_referrers(app, repo, digest, query).await;
    let filters = header(&resp, "oci-filters-applied");
    let mut out = Vec::new();
    loop {
        assert_eq!(resp.status(), 200, "GET {}", resp.url());
        assert_eq!(
            header(&resp, "content-type").as_deref(),
            Some(OCI_INDEX),
            "referrers Content-Type"
        );
        let next = header(&resp, "link").map(|l| {
            let target = l
                .trim()
                .strip_prefix('<')
                .and_then(|r| r.split_once('>'))
                .map(|(t, _)| t.to_string())
                .expect("Link <URL>");
            resp.url().join(&target).unwrap()
        });
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["schemaVersion"], json!(2));
        assert_eq!(v["mediaType"], json!(OCI_INDEX));
        let manifests = v["manifests"]
            .as_array()
            .unwrap_or_else(|| panic!("referrers \"manifests\" must be a list: {v}"));
        out.extend(manifests.iter().cloned());
        match next {
            Some(u) => resp = app.client.get(u).send().await.unwrap(),
            None => break,
        }
    }
    (out, filters)
}

fn find<'a>(list: &'a [Value], digest: &str) -> &'a Value {
    list.iter()
        .find(|d| d["digest"] == json!(digest))
        .unwrap_or_else(|| panic!("{digest} missing from referrers {list:#?}"))
}

#[tokio::test]
async fn referrers_list_every_manifest_with_the_subject() {
    let app = TestApp::start().await;
    let repo = unique_repo("referrers");
    let img = push_image(&app, &repo, "v1").await;
    let subj = subject(OCI_MANIFEST, &img.manifest);

    let sbom_ann = json!({"org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"});
    let (sbom, sbom_d) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.sbom.v1",
        json!({"subject": subj, "annotations": sbom_ann}),
    )
    .await;
    put_manifest_ok(&app, &repo, &sbom_d, OCI_MANIFEST, &sbom).await;

    let sig_ann = json!({"org.example.kind": "signature"});
    let (sig, sig_d) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.signature.v1",
        json!({"subject": subj, "annotations": sig_ann}),
    )
    .await;
    put_manifest_ok(&app, &repo, &sig_d, OCI_MANIFEST, &sig).await;

    // An image manifest without artifactType: the descriptor takes the config media type.
    let plain = make_image_with(
        &app,
        &repo,
        OCI_MANIFEST,
        "application/vnd.example.config.v1+json",
        OCI_LAYER,
        json!({"subject": subj}),
    )
    .await;
    put_manifest_ok(&app, &repo, &plain.digest, OCI_MANIFEST, &plain.manifest).await;

    // Indexes with a subject, with and without artifactType.
    let child = descriptor(OCI_MANIFEST, &img.manifest);
    let typed_index = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle.v1",
        "manifests": [child],
        "subject": subj,
        "annotations": {"org.example.kind": "bundle"},
    }));
    let typed_index_d = put_manifest_ok(
        &app,
        &repo,
        &sha256_digest(&typed_index),
        OCI_INDEX,
        &typed_index,
    )
    .await;
    let untyped_index = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child],
        "subject": subj,
    }));
    let untyped_index_d = put_manifest_ok(
        &app,
        &repo,
        &sha256_digest(&untyped_index),
        OCI_INDEX,
        &untyped_index,
    )
    .await;

    // Not referrers of img: no subject, or another subject.
    push_image(&app, &repo, "unrelated").await;
    let other = push_image(&app, &repo, "other").await;
    let (elsewhere, elsewhere_d) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.sbom.v1",
        json!({"subject": subject(OCI_MANIFEST, &other.manifest)}),
    )
    .await;
    put_manifest_ok(&app, &repo, &elsewhere_d, OCI_MANIFEST, &elsewhere).await;

    let (list, _) = referrers(&app, &repo, &img.digest, "").await;
    assert_eq!(list.len(), 5, "exactly the five referrers: {list:#?}");

    let d = find(&list, &sbom_d);
    assert_eq!(d["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(d["size"], json!(sbom.len()));
    assert_eq!(d["artifactType"], json!("application/vnd.example.sbom.v1"));
    assert_eq!(d["annotations"], sbom_ann);

    let d = find(&list, &sig_d);
    assert_eq!(d["size"], json!(sig.len()));
    assert_eq!(
        d["artifactType"],
        json!("application/vnd.example.signature.v1")
    );
    assert_eq!(d["annotations"], sig_ann);

    let d = find(&list, &plain.digest);
    assert_eq!(d["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(d["size"], json!(plain.manifest.len()));
    assert_eq!(
        d["artifactType"],
        json!("application/vnd.example.config.v1+json"),
        "a manifest without artifactType is listed with its config media type"
    );

    let d = find(&list, &typed_index_d);
    assert_eq!(d["mediaType"], json!(OCI_INDEX));
    assert_eq!(d["size"], json!(typed_index.len()));
    assert_eq!(
        d["artifactType"],
        json!("application/vnd.example.bundle.v1")
    );
    assert_eq!(d["annotations"], json!({"org.example.kind": "bundle"}));

    let d = find(&list, &untyped_index_d);
    assert_eq!(d["mediaType"], json!(OCI_INDEX));
    assert!(
        d.get("artifactType").is_none() || d["artifactType"] == json!(null),
        "an index without artifactType is listed without one: {d}"
    );
}

#[tokio::test]
async fn referrers_filter_by_artifact_type() {
    let app = TestApp::start().await;
    let repo = unique_repo("referrers");
    let img = push_image(&app, &repo, "v1").await;
    let subj = subject(OCI_MANIFEST, &img.manifest);
    let mut sboms = Vec::new();
    for _ in 0..2 {
        let (m, d) = make_artifact(
            &app,
            &repo,
            "application/vnd.example.sbom.v1",
            json!({"subject": subj}),
        )
        .await;
        put_manifest_ok(&app, &repo, &d, OCI_MANIFEST, &m).await;
        sboms.push(d);
    }
    let (sig, sig_d) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.signature.v1",
        json!({"subject": subj}),
    )
    .await;
    put_manifest_ok(&app, &repo, &sig_d, OCI_MANIFEST, &sig).await;

    let (list, filters) = referrers(
        &app,
        &repo,
        &img.digest,
        "?artifactType=application/vnd.example.sbom.v1",
    )
    .await;
    assert_eq!(
        filters.as_deref(),
        Some("artifactType"),
        "OCI-Filters-Applied"
    );
    let mut got: Vec<String> = list
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    sboms.sort();
    assert_eq!(got, sboms);

    let (list, filters) = referrers(
        &app,
        &repo,
        &img.digest,
        "?artifactType=application/vnd.example.nothing",
    )
    .await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert!(list.is_empty());

    let (list, filters) = referrers(&app, &repo, &img.digest, "").await;
    assert!(filters.is_none(), "no filter requested, none applied");
    assert_eq!(list.len(), 3);
}

#[tokio::test]
async fn referrers_of_an_unknown_subject_is_an_empty_index() {
    let app = TestApp::start().await;
    let repo = unique_repo("referrers");
    push_image(&app, &repo, "v1").await;
    let (list, _) = referrers(&app, &repo, &sha256_digest(b"nobody refers to me"), "").await;
    assert!(list.is_empty());
}

#[tokio::test]
async fn referrers_include_artifacts_pushed_before_their_subject() {
    let app = TestApp::start().await;
    let repo = unique_repo("referrers");
    let img = make_image(&app, &repo).await; // manifest pushed last
    let (sig, sig_d) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.signature.v1",
        json!({"subject": subject(OCI_MANIFEST, &img.manifest)}),
    )
    .await;
    put_manifest_ok(&app, &repo, &sig_d, OCI_MANIFEST, &sig).await;

    let (list, _) = referrers(&app, &repo, &img.digest, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], json!(sig_d));

    put_manifest_ok(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
    let (list, _) = referrers(&app, &repo, &img.digest, "").await;
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn referrers_with_a_malformed_digest_is_400() {
    let app = TestApp::start().await;
    let repo = unique_repo("referrers");
    push_image(&app, &repo, "v1").await;
    for bad in ["sha256:xyz", "notadigest", "latest"] {
        let (resp, _) = get_referrers(&app, &repo, bad, "").await;
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    }
}
