//! `/metrics`: Prometheus text with storage per namespace, for administrators only.

use crate::common::{TestApp, ADMIN_PASSWORD};
use crate::helpers::*;

fn value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_report_storage_per_namespace_to_admins_only() {
    if skip_external("metrics", "starts its own registry with auth") {
        return;
    }
    let mut app = TestApp::builder().auth().start().await;
    app.client = app.basic_client("admin", ADMIN_PASSWORD);
    push_blob(&app, "team1/app", &random_bytes(1000)).await;
    push_image(&app, "team2/app", "v1").await;

    let anonymous = reqwest::Client::new()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    assert_eq!(
        value(&text, "berth_namespace_bytes{namespace=\"team1\"}"),
        Some(1000),
        "{text}"
    );
    let team2 = value(&text, "berth_namespace_bytes{namespace=\"team2\"}").unwrap();
    assert!(team2 > 4500, "config + 2 layers + manifest: {text}");
    assert_eq!(value(&text, "berth_storage_bytes"), Some(1000 + team2));
    assert!(value(&text, "berth_http_requests_total{class=\"2xx\"}").unwrap() >= 5);
    assert!(value(&text, "berth_http_requests_total{class=\"4xx\"}").unwrap() >= 1);
}
