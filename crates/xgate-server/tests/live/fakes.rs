//! Local stand-ins for what cannot be reached from here: an X API v2 server and a relay (a
//! server of this API's contract), each on a loopback port, speaking its documented protocol
//! over real HTTP, over a ground-truth timeline per user, with failures on demand.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use xgate_ingest::reshape::v2_page;
use xgate_ingest::synth::{self, SynthConfig};
use xgate_model::{Tweet, TweetId, UserId};

/// The bearer token the fake X API accepts, and the relay's key header.
pub const BEARER: &str = "test-bearer-token";
pub const RELAY_KEY: (&str, &str) = ("x-relay-key", "relay-secret");

/// Something to do instead of answering well.
#[derive(Debug, Clone)]
pub enum Act {
    /// Answer with this status and a JSON error body.
    Status(u16),
    /// 429, with the rate-limit window reset this many seconds from now.
    TooMany { reset_in: u64 },
    /// A 200 whose body is not JSON.
    Malformed,
    /// Answer well, after this long.
    Slow(Duration),
}

#[derive(Default)]
pub struct Control {
    calls: AtomicUsize,
    timelines: Mutex<HashMap<u64, Vec<Tweet>>>,
    /// Acts for the next calls, in order.
    script: Mutex<VecDeque<Act>>,
    /// An act for every call while set.
    always: Mutex<Option<Act>>,
    /// Rate-limit headers of the next answers: (remaining, seconds to reset).
    window: Mutex<Option<(u64, u64)>>,
    /// Cursors handed out, to check none reaches xgate's clients.
    pub cursors: Mutex<Vec<String>>,
}

impl Control {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_timeline(&self, user: UserId, tweets: Vec<Tweet>) {
        self.timelines.lock().unwrap().insert(user.get(), tweets);
    }

    /// The user's media tweets' ids, newest first: what xgate must serve.
    pub fn media_ids(&self, user: UserId) -> Vec<String> {
        self.timelines.lock().unwrap()[&user.get()]
            .iter()
            .filter(|t| has_media(t))
            .map(|t| t.tweet_id.to_string())
            .collect()
    }

    /// Posts `count` new media tweets on top of the user's timeline.
    pub fn post(&self, user: UserId, count: u64) {
        let mut timelines = self.timelines.lock().unwrap();
        let timeline = timelines.get_mut(&user.get()).unwrap();
        let top = timeline.iter().find(|t| has_media(t)).unwrap().clone();
        for i in 1..=count {
            let mut tweet = top.clone();
            // One millisecond later per post, as snowflake ids go.
            tweet.tweet_id = TweetId(timeline[0].tweet_id.get() + (1 << 22) * i);
            tweet.text = Some(format!("posted later, number {i}"));
            timeline.insert(0, tweet);
        }
        timeline.sort_by_key(|t| std::cmp::Reverse(t.tweet_id));
    }

    pub fn then(&self, act: Act) {
        self.script.lock().unwrap().push_back(act);
    }

    pub fn always(&self, act: Option<Act>) {
        *self.always.lock().unwrap() = act;
    }

    pub fn window(&self, remaining: u64, reset_in: u64) {
        *self.window.lock().unwrap() = Some((remaining, reset_in));
    }

    /// Counts the call and says what to do instead of answering, if anything.
    async fn act(&self, headers: &mut HeaderMap) -> Option<Response> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let scripted = self.script.lock().unwrap().pop_front();
        let act = scripted.or_else(|| self.always.lock().unwrap().clone());
        if let Some((remaining, reset_in)) = *self.window.lock().unwrap() {
            window_headers(headers, remaining, reset_in);
        }
        match act? {
            Act::Slow(delay) => {
                tokio::time::sleep(delay).await;
                None
            }
            Act::Status(code) => Some(
                (
                    StatusCode::from_u16(code).unwrap(),
                    headers.clone(),
                    axum::Json(json!({"title": "failure on purpose"})),
                )
                    .into_response(),
            ),
            Act::TooMany { reset_in } => {
                window_headers(headers, 0, reset_in);
                Some(
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        headers.clone(),
                        axum::Json(json!({"title": "Too Many Requests"})),
                    )
                        .into_response(),
                )
            }
            Act::Malformed => {
                Some((StatusCode::OK, headers.clone(), "{\"data\": [tru").into_response())
            }
        }
    }

    fn cursor(&self, offset: usize) -> String {
        let cursor = format!("fake-cursor-{offset}");
        self.cursors.lock().unwrap().push(cursor.clone());
        cursor
    }
}

fn window_headers(headers: &mut HeaderMap, remaining: u64, reset_in: u64) {
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + reset_in;
    headers.insert("x-rate-limit-limit", HeaderValue::from(900));
    headers.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
    headers.insert("x-rate-limit-reset", HeaderValue::from(reset));
}

pub fn has_media(tweet: &Tweet) -> bool {
    tweet.extended_entities.is_some()
}

/// A user's timeline of `count` tweets, newest first; every fifth has no media.
pub fn timeline(index: u64, count: u64) -> (UserId, Vec<Tweet>) {
    let config = SynthConfig {
        users: 1,
        first_user: index,
        per_user: count,
        seed: 7,
    };
    let mut tweets: Vec<Tweet> = synth::tweets(config).collect();
    for (i, tweet) in tweets.iter_mut().enumerate() {
        if i % 5 == 4 {
            tweet.extended_entities = None;
            tweet.media_url = Some(Vec::new());
            tweet.video_url = None;
        }
    }
    tweets.reverse();
    (synth::user_id(index), tweets)
}

/// A fake server on a loopback port.
pub struct Fake {
    pub base: String,
    pub control: Arc<Control>,
}

impl Fake {
    async fn start(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        format!("http://{addr}")
    }

    /// X API v2: `GET /2/users/:id/tweets`, `max_results` and `pagination_token`.
    pub async fn x_api_v2() -> Fake {
        let control = Arc::new(Control::default());
        let app = Router::new()
            .route("/2/users/{id}/tweets", get(v2_tweets))
            .with_state(control.clone());
        Fake {
            base: Fake::start(app).await,
            control,
        }
    }

    /// A relay: this API's `POST /user/medias` and `POST /user/medias/continuation`.
    pub async fn relay() -> Fake {
        let control = Arc::new(Control::default());
        let app = Router::new()
            .route("/user/medias", post(relay_page))
            .route("/user/medias/continuation", post(relay_page))
            .with_state(control.clone());
        Fake {
            base: Fake::start(app).await,
            control,
        }
    }
}

async fn v2_tweets(
    State(control): State<Arc<Control>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request_headers: HeaderMap,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(response) = control.act(&mut headers).await {
        return response;
    }
    let authorized = request_headers
        .get("authorization")
        .is_some_and(|v| v == format!("Bearer {BEARER}").as_str());
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"title": "Unauthorized"})),
        )
            .into_response();
    }
    assert!(query["expansions"].contains("attachments.media_keys"));
    let size: usize = query["max_results"].parse().unwrap();
    let offset: usize = query
        .get("pagination_token")
        .map_or(0, |c| c.trim_start_matches("fake-cursor-").parse().unwrap());
    let timelines = control.timelines.lock().unwrap();
    let Some(timeline) = id.parse::<u64>().ok().and_then(|id| timelines.get(&id)) else {
        let body = json!({"errors": [{
            "value": id, "detail": format!("Could not find user with id: [{id}]."),
            "title": "Not Found Error", "resource_type": "user", "parameter": "id",
            "resource_id": id, "type": "https://api.twitter.com/2/problems/resource-not-found"
        }]});
        return (headers, axum::Json(body)).into_response();
    };
    let slice = timeline[offset.min(timeline.len())..(offset + size).min(timeline.len())].to_vec();
    let more = offset + size < timeline.len();
    drop(timelines);
    let mut body = v2_page(&slice);
    body["meta"] = json!({"result_count": slice.len()});
    if more {
        body["meta"]["next_token"] = Value::from(control.cursor(offset + size));
    }
    if slice.is_empty() {
        body.as_object_mut().unwrap().remove("data");
        body.as_object_mut().unwrap().remove("includes");
    }
    (headers, axum::Json(body)).into_response()
}

async fn relay_page(
    State(control): State<Arc<Control>>,
    request_headers: HeaderMap,
    axum::Json(request): axum::Json<Value>,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(response) = control.act(&mut headers).await {
        return response;
    }
    if request_headers
        .get(RELAY_KEY.0)
        .is_none_or(|v| v != RELAY_KEY.1)
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"detail": "bad key"})),
        )
            .into_response();
    }
    let user: u64 = request["user_id"].as_str().unwrap().parse().unwrap();
    let limit = request["limit"].as_u64().unwrap() as usize;
    let offset: usize = request["continuation_token"]
        .as_str()
        .map_or(0, |c| c.trim_start_matches("fake-cursor-").parse().unwrap());
    let timelines = control.timelines.lock().unwrap();
    let Some(timeline) = timelines.get(&user) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"detail": "user not found"})),
        )
            .into_response();
    };
    let media: Vec<&Tweet> = timeline.iter().filter(|t| has_media(t)).collect();
    let slice = &media[offset.min(media.len())..(offset + limit).min(media.len())];
    let more = offset + limit < media.len();
    let results: Vec<Value> = slice
        .iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    drop(timelines);
    let token = more.then(|| control.cursor(offset + limit));
    (
        headers,
        axum::Json(json!({"results": results, "continuation_token": token})),
    )
        .into_response()
}
