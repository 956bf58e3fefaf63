//! Mutual TLS with the district CA, on real processes: nodes sync with the hub over TLS, the
//! hub takes each node's organisation from its certificate (a node claiming another
//! organisation is refused), and clients without a certificate get nothing.

use std::path::Path;
use std::time::Duration;

use linkage_proto::v1 as pb;
use linkage_proto::v1::records_client::RecordsClient;
use linkage_tests::{Spawned, bin, eventually};
use serde_json::json;
use tonic::transport::{Channel, ClientTlsConfig};

fn linkage(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("linkage").unwrap())
        .args(args)
        .output()
        .unwrap()
}

/// Issues `org`'s certificate; every organisation of the tests is the directory's or the hub,
/// so the CLI has nothing to warn about.
fn issue(ca: &Path, org: &str) {
    let out = linkage(&["ca", "issue", "--dir", ca.to_str().unwrap(), "--org", org]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "issuing for {org}: {stderr}");
}

/// Starts `program` with TLS files of `cert_org` and waits for its address file.
fn start(
    program: &str,
    name: &str,
    dir: &Path,
    ca: &Path,
    cert_org: &str,
    extra: &[String],
) -> (Spawned, String) {
    let addr_file = dir.join(format!("{name}.addr"));
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        dir.join(name).display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        addr_file.display().to_string(),
        "--tls-ca".into(),
        ca.join("ca.pem").display().to_string(),
        "--tls-cert".into(),
        ca.join(format!("{cert_org}.pem")).display().to_string(),
        "--tls-key".into(),
        ca.join(format!("{cert_org}.key")).display().to_string(),
    ];
    args.extend_from_slice(extra);
    let mut proc = Spawned::start(
        name,
        &bin(program).unwrap(),
        &args,
        &dir.join(format!("{name}.log")),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file)
            && !addr.is_empty()
        {
            return (proc, addr.trim().to_owned());
        }
        assert!(proc.is_running(), "{name} exited:\n{}", proc.log_tail(20));
        assert!(
            std::time::Instant::now() < deadline,
            "{name} did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn tls_client(ca: &Path, org: &str, addr: &str) -> anyhow::Result<RecordsClient<Channel>> {
    let pem = |name: String| std::fs::read_to_string(ca.join(name)).unwrap();
    let config = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            pem("ca.pem".into()),
        ))
        .identity(tonic::transport::Identity::from_pem(
            pem(format!("{org}.pem")),
            pem(format!("{org}.key")),
        ));
    let channel = Channel::from_shared(format!("https://{addr}"))?
        .tls_config(config)?
        .connect()
        .await?;
    Ok(RecordsClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sync_over_mutual_tls_and_the_hub_trusts_certificates_not_hellos()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    let out = linkage(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for org in ["district-hub", "130304100", "bdh-scjg"] {
        issue(&ca, org);
    }

    let (_hub, hub_addr) = start("linkage-hub", "hub", dir.path(), &ca, "district-hub", &[]);
    let hub_url = format!("https://{hub_addr}");
    let node = |org: &str| {
        vec![
            "--org".to_owned(),
            org.to_owned(),
            "--hub".to_owned(),
            hub_url.clone(),
        ]
    };
    let (_haibin, haibin_addr) = start(
        "linkage-node",
        "haibin",
        dir.path(),
        &ca,
        "130304100",
        &node("130304100"),
    );
    let (_market, market_addr) = start(
        "linkage-node",
        "market",
        dir.path(),
        &ca,
        "bdh-scjg",
        &node("bdh-scjg"),
    );
    // Haibin's certificate on a node that says it is the Market Supervision Bureau.
    let (mut rogue, _) = start(
        "linkage-node",
        "rogue",
        dir.path(),
        &ca,
        "130304100",
        &node("bdh-scjg"),
    );

    let mut haibin = tls_client(&ca, "130304100", &haibin_addr).await?;
    let body = json!({
        "sender": "130304100", "receiver": "bdh-scjg", "title": "expired food", "facts": "facts",
        "discovered_at_ms": 1_790_562_000_000_i64, "materials": [{"kind": "transfer_letter", "name": "letter"}],
    });
    let created = haibin
        .create(pb::CreateRecordRequest {
            kind: "transfer".into(),
            parties: vec!["bdh-scjg".into()],
            body_json: body.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = created.envelope.unwrap().id;

    let mut market = tls_client(&ca, "bdh-scjg", &market_addr).await?;
    eventually(
        "the transfer to reach the Market Supervision Bureau over TLS",
        Duration::from_secs(30),
        || {
            let mut market = market.clone();
            let id = id.clone();
            async move { Ok(market.get(pb::GetRecordRequest { id }).await.ok()) }
        },
    )
    .await?;
    let _ = &mut market;

    // The rogue node is refused at hello, naming the certificate's organisation.
    eventually(
        "the hub to refuse the rogue node",
        Duration::from_secs(30),
        || {
            let log = rogue.log_tail(50);
            async move { Ok(log.contains("issued to 130304100").then_some(())) }
        },
    )
    .await?;
    assert!(rogue.is_running());

    // Without a client certificate the node answers nothing.
    let plain = Channel::from_shared(format!("http://{haibin_addr}"))?
        .connect()
        .await;
    if let Ok(channel) = plain {
        let refused = RecordsClient::new(channel)
            .list(pb::ListRecordsRequest::default())
            .await;
        assert!(refused.is_err(), "a client without TLS was served");
    }

    // The CLI speaks TLS with the same files.
    let ca_arg = ca.join("ca.pem").display().to_string();
    let cert = ca.join("bdh-scjg.pem").display().to_string();
    let key = ca.join("bdh-scjg.key").display().to_string();
    let url = format!("https://{market_addr}");
    let out = linkage(&[
        "--node",
        &url,
        "--tls-ca",
        &ca_arg,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--json",
        "info",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(info["org"], "bdh-scjg");

    // Retiring a node is the hub operator's: an office's certificate is refused, the hub's own
    // is let through (to find no such node).
    let forget_as = |org: &str| {
        let cert = ca.join(format!("{org}.pem")).display().to_string();
        let key = ca.join(format!("{org}.key")).display().to_string();
        linkage(&[
            "--hub",
            &hub_url,
            "--tls-ca",
            &ca_arg,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "forget-node",
            "no-such-node",
        ])
    };
    let by_office = String::from_utf8_lossy(&forget_as("bdh-scjg").stderr).into_owned();
    assert!(
        by_office.contains("PermissionDenied") && by_office.contains("hub's own certificate"),
        "{by_office}"
    );
    let by_operator = String::from_utf8_lossy(&forget_as("district-hub").stderr).into_owned();
    assert!(
        by_operator.contains("NotFound") && by_operator.contains("no-such-node"),
        "{by_operator}"
    );
    Ok(())
}

#[test]
fn a_server_without_tls_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("linkage-node").unwrap())
        .args(["--org", "130304100", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}
