//! `GET /events`: what this daemon did to containers, images and volumes,
//! as docker's event messages, live (a broadcast channel every handler
//! publishes into) and from a bounded history (`since`), with `until` and
//! the `type`, `event`, `container`, `image` and `volume` filters. Only
//! the daemon's own doings are events: a `kiln run` beside it is not
//! (as docker knows nothing of another daemon's).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::api::{filter_values, Shared};
use crate::error::ApiError;

/// How many past events `since` can reach.
const HISTORY: usize = 1024;

/// One event.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    /// `container`, `image`, `volume`.
    kind: &'static str,
    action: String,
    id: String,
    attributes: BTreeMap<String, String>,
    time: SystemTime,
}

impl Event {
    fn to_json(&self) -> Value {
        let since = self.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut value = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": { "ID": self.id, "Attributes": self.attributes },
            "scope": "local",
            "time": since.as_secs(),
            "timeNano": since.as_nanos() as u64,
        });
        // The fields API < 1.22 clients read, still sent by docker.
        if self.kind == "container" || self.kind == "image" {
            value["status"] = json!(self.action);
            value["id"] = json!(self.id);
            if let Some(image) = self.attributes.get("image") {
                value["from"] = json!(image);
            }
        }
        value
    }
}

/// The daemon's event bus.
pub(crate) struct Events {
    live: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            live: broadcast::channel(HISTORY).0,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        }
    }
}

impl Events {
    /// Records and sends one event.
    pub(crate) fn publish(
        &self,
        kind: &'static str,
        action: impl Into<String>,
        id: impl Into<String>,
        attributes: &[(&str, &str)],
    ) {
        let event = Event {
            kind,
            action: action.into(),
            id: id.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            time: SystemTime::now(),
        };
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // Sent under the lock: a subscriber that read the history under
        // it misses nothing and sees nothing twice.
        let _ = self.live.send(event);
    }

    /// A container's event, with its name and image.
    pub(crate) fn container(
        &self,
        action: impl Into<String>,
        record: &kiln_runtime::containers::ContainerRecord,
        extra: &[(&str, &str)],
    ) {
        let mut attributes = vec![
            ("name", record.name.as_str()),
            ("image", record.config.image.as_str()),
        ];
        attributes.extend_from_slice(extra);
        self.publish("container", action, record.id.clone(), &attributes);
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

/// `since`/`until`: seconds since the epoch, as the CLI sends them (it
/// turns `10m` and dates into that; kiln-engine's grammar takes those
/// too).
fn parse_time(name: &str, text: &str) -> Result<SystemTime, ApiError> {
    kiln_engine::parse_time(text, SystemTime::now())
        .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
}

/// Which events a client asked for.
struct Filter(Vec<(String, String)>);

impl Filter {
    fn matches(&self, event: &Event) -> bool {
        let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, value) in &self.0 {
            by_key.entry(key.as_str()).or_default().push(value.as_str());
        }
        // Values of one key are alternatives; keys must all hold.
        by_key.iter().all(|(key, values)| {
            values.iter().any(|value| match *key {
                "type" => event.kind == *value,
                "event" => event.action == *value || event.action.starts_with(&format!("{value}:")),
                "container" => {
                    event.kind == "container"
                        && (event.id.starts_with(value)
                            || event.attributes.get("name").is_some_and(|n| n == value))
                }
                "image" => {
                    event.attributes.get("image").is_some_and(|i| i == value)
                        || (event.kind == "image" && event.id == *value)
                }
                "volume" => event.kind == "volume" && event.id == *value,
                _ => true,
            })
        })
    }
}

/// `GET /events`.
pub(crate) async fn events(
    State(state): State<Shared>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let since = query
        .since
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| parse_time("since", t))
        .transpose()?;
    let until = query
        .until
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| parse_time("until", t))
        .transpose()?;
    let filter = Arc::new(Filter(filter_values(query.filters.as_deref())?));
    let (past, mut receiver) = {
        let history = state
            .events
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let past: Vec<Event> = match since {
            Some(since) => history
                .iter()
                .filter(|e| e.time >= since && until.is_none_or(|u| e.time <= u))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (past, state.events.live.subscribe())
    };
    let (sender, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |event: &Event| Bytes::from(event.to_json().to_string() + "\n");
        for event in past.iter().filter(|e| filter.matches(e)) {
            if sender.send(Ok(line(event))).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|u| {
            let left = u.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        loop {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(next) => next,
                    Err(_) => return,
                },
                None => receiver.recv().await,
            };
            match next {
                Ok(event) if filter.matches(&event) => {
                    if sender.send(Ok(line(&event))).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|item| (item, body))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &'static str, action: &str, id: &str, attributes: &[(&str, &str)]) -> Event {
        Event {
            kind,
            action: action.into(),
            id: id.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            time: UNIX_EPOCH,
        }
    }

    #[test]
    fn filters_hold_together_and_values_are_alternatives() {
        let start = event(
            "container",
            "start",
            "abc123",
            &[("name", "web"), ("image", "busybox")],
        );
        let exec = event(
            "container",
            "exec_start: sh -c x",
            "abc123",
            &[("name", "web")],
        );
        let pull = event("image", "pull", "busybox:latest", &[]);
        let filter = |pairs: &[(&str, &str)]| {
            Filter(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            )
        };
        assert!(filter(&[]).matches(&pull));
        assert!(filter(&[("type", "container")]).matches(&start));
        assert!(!filter(&[("type", "container")]).matches(&pull));
        assert!(filter(&[("event", "start"), ("event", "die")]).matches(&start));
        assert!(filter(&[("event", "exec_start")]).matches(&exec));
        assert!(filter(&[("container", "web"), ("event", "start")]).matches(&start));
        assert!(!filter(&[("container", "web"), ("event", "die")]).matches(&start));
        assert!(filter(&[("container", "abc")]).matches(&start));
        assert!(filter(&[("image", "busybox")]).matches(&start));
        assert!(filter(&[("image", "busybox:latest")]).matches(&pull));
    }

    #[test]
    fn times_are_seconds_since_the_epoch() {
        assert_eq!(
            parse_time("since", "1700000000.5").unwrap(),
            UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500)
        );
        assert!(parse_time("since", "yesterday").is_err());
        assert!(parse_time("until", "-1").is_err());
    }
}
