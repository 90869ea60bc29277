//! The signaling runtime: axum WebSocket glue around the sans-IO [`tsunagi_signal::Hub`].
//!
//! # Mounting `/ws` (the API the HTTP server builds against)
//!
//! ```ignore
//! use tsunagi::signaling::{self, SignalingHandle, SignalingOptions};
//!
//! // After Config::load and after main.rs has added the generated static-auth-secret
//! // (the TURN credentials in `welcome` are minted with the first secret):
//! let mut options: SignalingOptions = SignalingOptions::from_config(&config);
//! options.turns_port = Some(5349); // only when TURN over TLS is served
//! let handle: SignalingHandle = SignalingHandle::start(options); // spawns the core task (needs a tokio runtime)
//! let app: axum::Router = axum::Router::new()
//!     .merge(signaling::routes(handle.clone())) // GET /ws (WebSocket upgrade)
//!     .merge(other_routes);
//! // Serve with connect info so that the runtime can log client addresses:
//! // axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//! // (without it, addresses are simply not logged).
//! ...
//! handle.shutdown().await; // closes every signaling WebSocket (1001) and stops the core task
//! let stats: tsunagi_signal::Stats = handle.stats(); // live counters, for metrics
//! ```
//!
//! Exact signatures:
//! * `pub fn routes(handle: SignalingHandle) -> axum::Router` (a `Router<()>`, state applied)
//! * `impl SignalingOptions { pub fn from_config(config: &crate::config::Config) -> SignalingOptions }`
//! * `impl SignalingHandle { pub fn start(options: SignalingOptions) -> SignalingHandle;
//!   pub async fn shutdown(&self); pub fn stats(&self) -> tsunagi_signal::Stats }`
//! * `SignalingHandle: Clone + Send + Sync + 'static`.
