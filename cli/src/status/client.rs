//! The HTTP client of `mev status` and the tests: one blocking GET (ureq,
//! plain `http://`; the broker's endpoint serves no TLS), every status
//! returned as a response, not as an error, so a 503 from `/readyz` can be
//! shown with its reason.

use anyhow::Context as _;
use std::time::Duration;

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// GETs `url`, giving up after `timeout` in all.
pub fn get(url: &str, timeout: Duration) -> anyhow::Result<Response> {
    anyhow::ensure!(
        url.starts_with("http://"),
        "{url}: only http:// URLs are supported"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("mev/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut answer = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let headers = answer
        .headers()
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_ascii_lowercase(), v)
        })
        .collect();
    let body = answer
        .body_mut()
        .read_to_string()
        .with_context(|| format!("the answer from {url}"))?;
    Ok(Response {
        status: answer.status().as_u16(),
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Serves `answer` once on a local port; returns the URL.
    fn serve_once(answer: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            s.write_all(answer).unwrap();
        });
        format!("http://{addr}/api/status")
    }

    #[test]
    fn answers_are_read_with_length_or_chunks_and_any_status() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX-A: b\r\n\r\nhello");
        let r = get(&url, Duration::from_secs(10)).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        assert_eq!(r.header("X-A"), Some("b"));
        let url = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n6\r\n ready\r\n0\r\n\r\n",
        );
        let r = get(&url, Duration::from_secs(10)).unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
        assert!(get("https://x/", Duration::from_secs(1)).is_err());
    }
}
