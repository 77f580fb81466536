//! A shop under fault: orders streamed at a running server from several
//! senders that, like WordPress, send each order again until it is answered
//! 200 ([`OrderStream`]), and the checks every fault test ends with: every
//! order exists once, fulfilled, and its buyer got exactly one key email
//! with a key nobody else got.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::json;

use super::{ServeProcess, TOKEN, client, eventually, read_eml_files, status_and_json};

/// One answer a sender got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The status, and whether it came with `Retry-After`.
    Status(u16, bool),
    /// No answer: refused, reset or timed out (the server was killed).
    NoAnswer,
}

/// Orders `{prefix}-0` … `{prefix}-{n-1}` for SKU `course-101`, sent by
/// several senders until each is answered 200.
pub struct OrderStream {
    addr: Arc<RwLock<SocketAddr>>,
    answered: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    senders: tokio::task::JoinSet<()>,
}

impl OrderStream {
    pub fn start(addr: SocketAddr, prefix: &str, orders: usize, senders: usize) -> Self {
        let stream = Self {
            addr: Arc::new(RwLock::new(addr)),
            answered: Arc::default(),
            seen: Arc::default(),
            senders: tokio::task::JoinSet::new(),
        };
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..senders {
            let (next, answered, seen, addr) = (
                next.clone(),
                stream.answered.clone(),
                stream.seen.clone(),
                stream.addr.clone(),
            );
            let prefix = prefix.to_string();
            tasks.spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= orders {
                        return;
                    }
                    let body = order_body(&prefix, n);
                    loop {
                        let at: SocketAddr = *addr.read().unwrap();
                        let url =
                            format!("http://{at}/v1/webhooks/generic?token={TOKEN}&sku=course-101");
                        let answer = match client.post(url).json(&body).send().await {
                            Ok(response) => Seen::Status(
                                response.status().as_u16(),
                                response.headers().contains_key("retry-after"),
                            ),
                            Err(_) => Seen::NoAnswer,
                        };
                        seen.lock().unwrap().push(answer);
                        if matches!(answer, Seen::Status(200, _)) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        Self {
            senders: tasks,
            ..stream
        }
    }

    /// How many orders were answered 200 so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Every answer so far, in the order they came.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Where the senders send from now on (a restarted server).
    pub fn point_at(&self, addr: SocketAddr) {
        *self.addr.write().unwrap() = addr;
    }

    /// Waits until every order was answered 200; every answer seen.
    pub async fn finish(mut self) -> Vec<Seen> {
        while let Some(done) = self.senders.join_next().await {
            done.unwrap();
        }
        self.seen()
    }
}

/// Sends order `{prefix}-{n}` again and again (50 ms apart, for up to 30 s)
/// until an answer satisfies `enough`; every answer, the last one last.
/// On failure the panic shows the answers and what `server` logged last.
pub async fn send_until(
    server: &ServeProcess,
    prefix: &str,
    n: usize,
    enough: impl Fn(Seen) -> bool,
) -> Vec<Seen> {
    let addr = server.addr;
    let client = client();
    let url = format!("http://{addr}/v1/webhooks/generic?token={TOKEN}&sku=course-101");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = match client.post(&url).json(&order_body(prefix, n)).send().await {
            Ok(response) => Seen::Status(
                response.status().as_u16(),
                response.headers().contains_key("retry-after"),
            ),
            Err(_) => Seen::NoAnswer,
        };
        seen.push(answer);
        if enough(answer) {
            return seen;
        }
        if tokio::time::Instant::now() >= deadline {
            let log = server.log.lock().unwrap().clone();
            let tail = &log[log.len().saturating_sub(30)..];
            panic!(
                "{prefix}-{n}: never the answer awaited: {seen:?}; the server logged last: {tail:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn order_body(prefix: &str, n: usize) -> serde_json::Value {
    json!({
        "order_id": format!("{prefix}-{n}"),
        "email": format!("{}{n}@example.com", prefix.to_lowercase()),
    })
}

/// Every order exists once and is fulfilled.
pub async fn assert_all_fulfilled(addr: SocketAddr, prefix: &str, orders: usize) {
    let client = client();
    for n in 0..orders {
        let response = client
            .get(format!("http://{addr}/v1/orders/generic/{prefix}-{n}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let (status, order) = status_and_json(response).await;
        assert_eq!(status, 200, "{prefix}-{n}: {order}");
        assert_eq!(order["state"], "fulfilled", "{prefix}-{n}: {order}");
    }
}

/// Waits for one key email per order in `mail_dir` (file transport), then
/// checks that no order was mailed twice and no key went to two buyers.
pub async fn assert_one_key_email_each(
    mail_dir: &Path,
    prefix: &str,
    orders: usize,
    keys: &[String],
) {
    let key_emails = || -> Vec<String> {
        read_eml_files(mail_dir)
            .into_iter()
            .filter(|m| m.contains("Subject: Your license key"))
            .filter(|m| m.contains(&format!("order {prefix}-")))
            .collect()
    };
    let mut mails = Vec::new();
    eventually("one key email per order", async || {
        mails = key_emails();
        mails.len() >= orders
    })
    .await;
    assert_eq!(mails.len(), orders, "no order mailed twice");
    let mut key_of_order: HashMap<String, String> = HashMap::new();
    for mail in &mails {
        // "Thank you for your order F-12." (the full stop tells F-1 from F-12)
        let order = (0..orders)
            .map(|n| format!("{prefix}-{n}"))
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
    let distinct: HashSet<_> = key_of_order.values().collect();
    assert_eq!(distinct.len(), orders, "no key went to two buyers");
}

/// No answer was a 5xx other than 503 with `Retry-After`; on failure the
/// panic shows what `server` logged as errors.
pub fn assert_no_server_error(seen: &[Seen], server: &ServeProcess) {
    let bad: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Status(status, retry_after) if *status >= 500 && !(*status == 503 && *retry_after)))
        .collect();
    if !bad.is_empty() {
        let log = server.log.lock().unwrap().clone();
        // What was not a 503: anything but "database unavailable".
        let errors: Vec<_> = log
            .iter()
            .filter(|l| l.contains("ERROR") || l.contains("panicked"))
            .filter(|l| !l.contains("database unavailable") && !l.contains("the job runs again"))
            .collect();
        panic!("server errors: {bad:?}; the server logged: {errors:#?}");
    }
}
