//! Faults under load: `allot serve` SIGKILLed again and again while a shop
//! streams orders and, like WordPress, retries whatever got no 200.
//! Afterwards every order exists once, every buyer has exactly one key and
//! exactly one key email, no key went twice, and nothing is left running.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::json;

use crate::{
    helpers::{Backend, ServeProcess, TOKEN, TestDb, allot_command, eventually, read_eml_files},
    on_every_backend,
};

on_every_backend!(sigkills_during_an_order_stream_lose_and_duplicate_nothing);

const ORDERS: usize = 60;
const KEYS: usize = 80;
const KILLS: usize = 3;

async fn sigkills_during_an_order_stream_lose_and_duplicate_nothing(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let keys: Vec<String> = (0..KEYS).map(|i| format!("FAULT-{i:04}")).collect();
    std::fs::write(dir.path().join("keys.txt"), keys.join("\n")).unwrap();
    let imported = allot_command(dir.path())
        .args(["keys", "import", "keys.txt", "--sku", "course-101"])
        .env("ALLOT_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");

    let env: Vec<(String, String)> = vec![
        ("ALLOT_WEBHOOK_TOKEN".into(), TOKEN.into()),
        ("ALLOT_MAIL_DIR".into(), mail_dir.display().to_string()),
        // Short leases, so that mail a killed process held is taken over
        // within the test.
        ("ALLOT_JOB_LEASE".into(), "2s".into()),
        ("ALLOT_SEND_TIMEOUT".into(), "1s".into()),
        ("ALLOT_WORKER_POLL_INTERVAL".into(), "100ms".into()),
    ];
    let start = {
        let (dir, url) = (dir.path().to_path_buf(), db.url.clone());
        move || {
            let (dir, url, env) = (dir.clone(), url.clone(), env.clone());
            tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                ServeProcess::start_with(&dir, &url, &env)
            })
        }
    };
    let mut server = start().await.unwrap();
    let addr = Arc::new(RwLock::new(server.addr));

    // The shop: six senders, each order sent until it is answered 200.
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut shop = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (next, answered, addr) = (next.clone(), answered.clone(), addr.clone());
        shop.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut tries = 0;
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= ORDERS {
                    return tries;
                }
                let body =
                    json!({"order_id": format!("F-{n}"), "email": format!("f{n}@example.com")});
                loop {
                    tries += 1;
                    let at: SocketAddr = *addr.read().unwrap();
                    let url =
                        format!("http://{at}/v1/webhooks/generic?token={TOKEN}&sku=course-101");
                    match client.post(url).json(&body).send().await {
                        Ok(response) if response.status() == 200 => break,
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    // The faults: SIGKILL whenever another quarter of the orders is answered.
    for kill in 1..=KILLS {
        let threshold = kill * ORDERS / (KILLS + 1);
        eventually("orders to be answered", async || {
            answered.load(Ordering::SeqCst) >= threshold
        })
        .await;
        server.signal("KILL");
        drop(server);
        server = start().await.unwrap();
        *addr.write().unwrap() = server.addr;
    }
    let mut tries = 0;
    while let Some(done) = shop.join_next().await {
        tries += done.unwrap();
    }
    assert!(tries >= ORDERS);

    // Every order exists once, fulfilled.
    let client = crate::helpers::client();
    for n in 0..ORDERS {
        let response = client
            .get(format!("http://{}/v1/orders/generic/F-{n}", server.addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let (status, order) = crate::helpers::status_and_json(response).await;
        assert_eq!(status, 200, "F-{n}: {order}");
        assert_eq!(order["state"], "fulfilled", "F-{n}: {order}");
    }

    // Exactly one key email per order, each with a different key, once the
    // surviving server has taken over what the killed ones held.
    let mut mails = Vec::new();
    eventually("one key email per order", async || {
        mails = read_eml_files(&mail_dir)
            .into_iter()
            .filter(|m| m.contains("Subject: Your license key"))
            .collect();
        mails.len() >= ORDERS
    })
    .await;
    assert_eq!(mails.len(), ORDERS, "no order mailed twice");
    let mut key_of_order: HashMap<String, String> = HashMap::new();
    for mail in &mails {
        // "Thank you for your order F-12." (the full stop tells F-1 from F-12)
        let order = (0..ORDERS)
            .map(|n| format!("F-{n}"))
            .find(|id| mail.contains(&format!("order {id}.")))
            .unwrap_or_else(|| panic!("a key email names its order: {mail}"));
        let key = keys
            .iter()
            .find(|k| mail.contains(k.as_str()))
            .unwrap_or_else(|| panic!("a key email carries a key: {mail}"));
        assert!(
            key_of_order.insert(order.clone(), key.clone()).is_none(),
            "{order} mailed twice"
        );
    }
    let distinct: std::collections::HashSet<_> = key_of_order.values().collect();
    assert_eq!(distinct.len(), ORDERS, "no key went to two buyers");

    let stock = allot_command(dir.path())
        .args(["keys", "stock", "--json"])
        .env("ALLOT_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let stock: serde_json::Value = serde_json::from_slice(&stock.stdout).unwrap();
    assert_eq!(stock[0]["assigned"], ORDERS, "{stock}");
    assert_eq!(stock[0]["available"], KEYS - ORDERS, "{stock}");

    // Jobs a killed process held are taken back once their lease expires,
    // and sent again under the same Message-ID: still one mail per order.
    eventually("no job left running", async || {
        let running = allot_command(dir.path())
            .args(["jobs", "list", "--state", "running", "--json"])
            .env("ALLOT_DATABASE_URL", &db.url)
            .output()
            .unwrap();
        let running: serde_json::Value = serde_json::from_slice(&running.stdout).unwrap();
        running == json!([])
    })
    .await;
    let after: Vec<String> = read_eml_files(&mail_dir)
        .into_iter()
        .filter(|m| m.contains("Subject: Your license key"))
        .collect();
    assert_eq!(after.len(), ORDERS, "redelivery reused each Message-ID");
    drop(server);
}
