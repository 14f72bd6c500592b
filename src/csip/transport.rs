//! Typed GET/PUT/POST over the `http` client: read a resource as a `sep2` type, page a
//! list with `?s=&l=` until `all` items are in, and classify failures for the poller.

use crate::http::{Client, HttpError};
use crate::sep2::{self, List, ReadError, Readable};

use super::poller::PollOutcome;

/// Items asked for per list page. Small pages keep memory flat on a router; every page
/// carries `s` and `l` so servers with one-item default pages are walked completely.
pub const PAGE_LIMIT: u32 = 50;

/// Most pages walked for one list (a guard against servers whose `all` never fills).
const MAX_PAGES: u32 = 200;

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The request failed (transport, timeout, 4xx/5xx other than 404/410).
    Http(HttpError),
    /// 404 or 410 on an href the server gave us.
    Gone { href: String, status: u16 },
    /// The body did not parse; the last good copy is kept.
    Parse { href: String, error: ReadError },
    /// A POST that should create something came back without a Location.
    NoLocation { href: String },
}

impl FetchError {
    pub fn outcome(&self) -> PollOutcome {
        match self {
            FetchError::Gone { .. } => PollOutcome::Gone,
            _ => PollOutcome::Failed,
        }
    }

    /// Server-requested delay (429/503 Retry-After), in milliseconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            FetchError::Http(err) => err.retry_after().map(|d| d.as_millis() as u64),
            _ => None,
        }
    }

    /// True for errors that mean the server is not reachable at all (as opposed to a
    /// resource-level problem).
    pub fn is_unreachable(&self) -> bool {
        match self {
            FetchError::Http(err) => err.status().is_none(),
            _ => false,
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Http(err) => write!(f, "{err}"),
            FetchError::Gone { href, status } => {
                write!(f, "{href}: the server answered {status} (resource gone)")
            }
            FetchError::Parse { href, error } => write!(f, "{href}: bad document: {error}"),
            FetchError::NoLocation { href } => {
                write!(
                    f,
                    "POST {href}: the server created something but sent no Location"
                )
            }
        }
    }
}

impl std::error::Error for FetchError {}

/// The path part of an href (servers may send absolute URLs; csipd talks to one server).
pub fn href_path(href: &str) -> &str {
    for scheme in ["https://", "http://"] {
        if let Some(rest) = href.strip_prefix(scheme) {
            return rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        }
    }
    href
}

fn with_paging(href: &str, start: u32, limit: u32) -> String {
    let sep = if href.contains('?') { '&' } else { '?' };
    format!("{href}{sep}s={start}&l={limit}")
}

/// The engine's connection to the server.
pub struct Transport {
    client: Client,
    /// Requests made (for `csipd discover` and the status page).
    pub requests: u64,
}

impl Transport {
    pub fn new(client: Client) -> Transport {
        Transport {
            client,
            requests: 0,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn map_http(href: &str, err: HttpError) -> FetchError {
        match err.status() {
            Some(status @ (404 | 410)) => FetchError::Gone {
                href: href.to_string(),
                status,
            },
            _ => FetchError::Http(err),
        }
    }

    /// GETs `href` and returns the raw body (empty for 204).
    pub async fn get_raw(&mut self, href: &str) -> Result<Vec<u8>, FetchError> {
        self.requests += 1;
        let path = href_path(href);
        match self.client.get(path).await {
            Ok(response) => Ok(response.body),
            Err(err) => Err(Self::map_http(href, err)),
        }
    }

    /// GETs `href` as a `T`. `Ok(None)` for an empty answer (204, e.g. a
    /// DefaultDERControl that is not set).
    pub async fn get_opt<T: Readable>(&mut self, href: &str) -> Result<Option<T>, FetchError> {
        let body = self.get_raw(href).await?;
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        sep2::read::<T>(&body)
            .map(Some)
            .map_err(|error| FetchError::Parse {
                href: href.to_string(),
                error,
            })
    }

    /// GETs `href` as a `T`; an empty body is a parse error.
    pub async fn get<T: Readable>(&mut self, href: &str) -> Result<T, FetchError> {
        match self.get_opt::<T>(href).await? {
            Some(value) => Ok(value),
            None => Err(FetchError::Parse {
                href: href.to_string(),
                error: ReadError::new(format!("empty body, expected <{}>", T::ROOT)),
            }),
        }
    }

    /// GETs every page of the list at `href` (`?s=&l=` on each page) and returns one
    /// list holding all items; `poll_rate_s` is the first page's.
    pub async fn get_list<T>(&mut self, href: &str) -> Result<List<T>, FetchError>
    where
        List<T>: Readable,
    {
        let mut all_items: Vec<T> = Vec::new();
        let mut first: Option<List<T>> = None;
        let mut start = 0u32;
        for _ in 0..MAX_PAGES {
            let page: List<T> = self.get(&with_paging(href, start, PAGE_LIMIT)).await?;
            let got = page.items.len() as u32;
            let total = page.all;
            let mut page = page;
            all_items.append(&mut page.items);
            if first.is_none() {
                first = Some(page);
            }
            start += got;
            if got == 0 || start >= total {
                break;
            }
        }
        let (href_out, all, subscribable, poll_rate_s) = match first {
            Some(page) => (page.href, page.all, page.subscribable, page.poll_rate_s),
            None => (None, 0, None, None),
        };
        Ok(List {
            href: href_out,
            all,
            results: all_items.len() as u32,
            subscribable,
            poll_rate_s,
            items: all_items,
        })
    }

    /// PUTs `body` to `href`.
    pub async fn put(&mut self, href: &str, body: &str) -> Result<(), FetchError> {
        self.requests += 1;
        self.client
            .put(href_path(href), body.as_bytes())
            .await
            .map(|_| ())
            .map_err(|err| Self::map_http(href, err))
    }

    /// POSTs `body` to `href`; returns the `Location` the server sent, if any.
    pub async fn post(&mut self, href: &str, body: &str) -> Result<Option<String>, FetchError> {
        self.requests += 1;
        self.client
            .post(href_path(href), body.as_bytes())
            .await
            .map(|response| response.location().map(str::to_string))
            .map_err(|err| Self::map_http(href, err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn href_paths() {
        assert_eq!(href_path("/edev/1"), "/edev/1");
        assert_eq!(href_path("https://server:8443/edev/1?x=1"), "/edev/1?x=1");
        assert_eq!(href_path("http://server"), "/");
        assert_eq!(with_paging("/edev", 0, 50), "/edev?s=0&l=50");
        assert_eq!(with_paging("/edev?a=1", 5, 50), "/edev?a=1&s=5&l=50");
    }
}
