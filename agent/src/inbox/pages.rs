//! The inbox's pages: thin handlers (check the session and the CSRF
//! token, parse the form, call [`super::conversations`],
//! [`super::assign`] or the device task) and askama templates, which
//! escape every value they print.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use comptoir_client::ClientError;
use comptoir_client::client::MAX_TEXT_LEN;
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{TemplateParameter, template_parameter};
use comptoir_protocol::template::TemplateId;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::api_error::ApiError;
use crate::device::{ApprovedTemplate, Command, PeerState, TemplateRef};

use super::agents::{self, Agent};
use super::conversations::{self, Canned, Flag, Note, View, Window};
use super::handover::{self, Waited};
use super::session::{self, LOGIN_COOKIE, SESSION_COOKIE, Session};
use super::{InboxError, InboxState, Result, assets, assign, events, files};

/// How long a page waits for the device task (peer state, templates)
/// before it renders without.
const DEVICE_WAIT: Duration = Duration::from_secs(5);
/// Conversations a list shows.
const LIST_LIMIT: u32 = 200;

/// The inbox's routes (state and security headers are added by
/// [`super::router`]).
pub fn routes() -> Router<InboxState> {
    Router::new()
        .route("/inbox", get(index))
        .route("/inbox/login", get(login_page).post(login))
        .route("/inbox/logout", post(logout))
        .route("/inbox/availability", post(set_availability))
        .route("/inbox/events", get(events::stream))
        .route("/inbox/assets/inbox.js", get(assets::script))
        .route("/inbox/assets/inbox.css", get(assets::style))
        .route("/inbox/c/{customer}", get(conversation))
        .route("/inbox/c/{customer}/reply", post(reply))
        .route("/inbox/c/{customer}/template", post(send_template))
        .route("/inbox/c/{customer}/assign", post(assign_to))
        .route("/inbox/c/{customer}/note", post(add_note))
        .route("/inbox/c/{customer}/accept", post(accept_request))
        .route("/inbox/c/{customer}/file/{message}", get(files::download))
        .route("/inbox/agents", get(agents_page).post(add_agent))
        .route("/inbox/agents/{id}/disabled", post(set_disabled))
        .route("/inbox/canned", post(add_canned))
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering an inbox page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "inbox/error.html")]
struct ErrorPage<'a> {
    status: String,
    message: &'a str,
}

/// An error page (for [`InboxError`]'s response).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    render(&ErrorPage {
        status: status.to_string(),
        message,
    })
}

/// "14:05 UTC" of a time in ms since the Unix epoch.
fn at(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02} UTC", (minutes / 60) % 24, minutes % 60)
}

/// What the inbox calls a customer: the number they shared, or a short
/// form of their account id.
fn label(customer: &str, phone: Option<&str>) -> String {
    match phone {
        Some(p) => p.to_owned(),
        None => format!("Customer {}", customer.get(..8).unwrap_or(customer)),
    }
}

pub(super) fn customer_id(customer: &str) -> Result<AccountId> {
    AccountId::from_hex(customer).map_err(|_| InboxError::NotFound)
}

async fn ask<T>(state: &InboxState, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    state.commands.send(make(tx)).await.ok()?;
    tokio::time::timeout(DEVICE_WAIT, rx).await.ok()?.ok()
}

/// Have the device task do something that acts (send a reply, a template,
/// accept a request) and wait up to [`DEVICE_WAIT`] for the outcome, the
/// time spent waiting for room in its queue included. A device task
/// still busy then does it later: that is [`InboxError::Queued`], not a
/// failure (an agent told it failed would do it twice), and `late` gets
/// the outcome once it comes (`None`: the daemon stopped before doing
/// it). The command reaches the device even if this request is dropped
/// first (the browser left); a daemon stopping meanwhile is a refusal.
async fn act<T: Send + 'static>(
    state: &InboxState,
    what: &str,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
    late: impl FnOnce(Option<T>) + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    let (commands, command) = (state.commands.clone(), make(tx));
    let action = async move {
        commands.send(command).await.ok()?;
        rx.await.ok()
    };
    match handover::wait_or_hand_over(action, DEVICE_WAIT, late).await {
        Waited::Done(outcome) => Ok(outcome),
        Waited::Dropped => Err(refused(ApiError::Stopping)),
        Waited::Later => Err(InboxError::Queued(what.to_owned())),
    }
}

/// What [`act`] does with a queued action's late outcome: a refusal, or
/// the daemon stopping before it was done, becomes a note on
/// `customer`'s conversation, by the agent who acted, saying what was
/// not done and why (the agent was told it was queued; the page shows
/// the note as soon as it is added).
fn note_if_refused<S>(
    state: &InboxState,
    customer: &str,
    agent_id: i64,
    what: String,
) -> impl FnOnce(Option<std::result::Result<S, ClientError>>) + Send + 'static {
    let (db, clock, customer) = (state.db.clone(), state.clock.clone(), customer.to_owned());
    move |outcome| {
        let why = match outcome {
            Some(Ok(_)) => return,
            Some(Err(e)) => ApiError::from(e).message(),
            None => ApiError::Stopping.message(),
        };
        let body = format!("{what}: {why}");
        if let Err(e) = conversations::add_note(&db, &customer, agent_id, &body, clock.now_ms()) {
            tracing::warn!(error = %e, "noting a queued action that was not done");
        }
    }
}

/// What [`act`] does with a queued accept refused late, or dropped
/// undone: the inbox had recorded it accepted (when `recorded`: this
/// accept made the record); it is a request again, and a note by the
/// agent who accepted says why.
fn accept_refused_late(
    state: &InboxState,
    customer: &str,
    agent_id: i64,
    recorded: bool,
) -> impl FnOnce(Option<std::result::Result<(), ClientError>>) + Send + 'static {
    let (db, customer_id) = (state.db.clone(), customer.to_owned());
    let note = note_if_refused(
        state,
        customer,
        agent_id,
        "The message request was not accepted (it is a request again)".to_owned(),
    );
    move |outcome| {
        let accepted = matches!(outcome, Some(Ok(())));
        if recorded
            && !accepted
            && let Err(e) = conversations::undo_accept(&db, &customer_id, agent_id)
        {
            tracing::warn!(error = %e, "marking an accept not done as a request again");
        }
        note(outcome);
    }
}

/// The start of `text` (at most 60 characters), for a note naming it.
fn excerpt(text: &str) -> String {
    let mut cut: String = text.trim().chars().take(60).collect();
    if cut.len() < text.trim().len() {
        cut.push('…');
    }
    cut
}

/// The client's address, for the login rate limit.
struct ClientIp(IpAddr);

impl FromRequestParts<InboxState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &InboxState,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(Self(session::client_ip(
            &parts.extensions,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

// ---- login ----

#[derive(Template)]
#[template(path = "inbox/login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
}

fn login_form(state: &InboxState, status: StatusCode, error: Option<String>) -> Response {
    let csrf = session::new_token();
    let cookie = session::set_cookie(state, LOGIN_COOKIE, &csrf, 3600);
    (
        status,
        [(header::SET_COOKIE, cookie)],
        render(&LoginPage { csrf, error }),
    )
        .into_response()
}

async fn login_page(State(state): State<InboxState>) -> Response {
    login_form(&state, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    name: String,
    password: String,
}

async fn login(
    State(state): State<InboxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !session::tokens_match(&form.csrf, expected) {
        return Err(InboxError::Csrf);
    }
    let name = form.name.trim().to_owned();
    // No agent has a longer name: refused before anything is counted or
    // checked (the limiter's table holds names of bounded length).
    if name.chars().count() > agents::MAX_NAME_LEN {
        return Ok(login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password.".into()),
        ));
    }
    let now = Instant::now();
    if !state.limiter.attempt(&name, ip, now) {
        tracing::warn!(%ip, "login refused: too many failures");
        return Ok(login_form(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some(InboxError::RateLimited.to_string()),
        ));
    }
    let db = state.db.clone();
    let password = zeroize::Zeroizing::new(form.password);
    let checked = {
        let name = name.clone();
        // A few checks at a time: each takes Argon2's memory. The turn
        // goes with the check, so a client hanging up does not free it
        // while the check still runs.
        let turn = Arc::clone(&state.password_checks)
            .acquire_owned()
            .await
            .map_err(|_| InboxError::Invalid("the login could not be checked".into()))?;
        tokio::task::spawn_blocking(move || {
            let checked = agents::check_login(&db, &name, &password);
            drop(turn);
            checked
        })
        .await
        .map_err(|_| InboxError::Invalid("the login could not be checked".into()))??
    };
    let Some(agent) = checked else {
        return Ok(login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password.".into()),
        ));
    };
    state.limiter.succeeded(&name, ip);
    let token = session::open(&state, &agent)?;
    // Logging in makes the agent available for automatic assignment.
    agents::set_available(&state.db, agent.id, true)?;
    tracing::info!(agent = %agent.name, "agent logged in");
    let max_age = session::SESSION_MS / 1000;
    Ok((
        // Two cookies: appended, not one replacing the other.
        AppendHeaders([
            (
                header::SET_COOKIE,
                session::set_cookie(&state, SESSION_COOKIE, &token, max_age),
            ),
            (
                header::SET_COOKIE,
                session::set_cookie(&state, LOGIN_COOKIE, "", 0),
            ),
        ]),
        Redirect::to("/inbox"),
    )
        .into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<InboxState>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    session.check_csrf(&form.csrf)?;
    session::close(&state, session.token())?;
    agents::set_available(&state.db, session.agent.id, false)?;
    Ok((
        [(
            header::SET_COOKIE,
            session::set_cookie(&state, SESSION_COOKIE, "", 0),
        )],
        Redirect::to("/inbox/login"),
    )
        .into_response())
}

#[derive(Deserialize)]
struct AvailabilityForm {
    csrf: String,
    available: String,
}

/// `POST /inbox/availability`: the agent steps away (`available=0`:
/// nothing more is assigned to them automatically) or back (`1`).
async fn set_availability(
    State(state): State<InboxState>,
    session: Session,
    Form(form): Form<AvailabilityForm>,
) -> Result<Response> {
    session.check_csrf(&form.csrf)?;
    let available = match form.available.as_str() {
        "1" => true,
        "0" => false,
        _ => return Err(InboxError::Invalid("available is 1 or 0".into())),
    };
    agents::set_available(&state.db, session.agent.id, available)?;
    Ok(Redirect::to("/inbox").into_response())
}

// ---- the conversation list and search ----

struct ConversationView {
    customer: String,
    label: String,
    phone: Option<String>,
    unread: u64,
    window: String,
    window_open: bool,
    assignee: Option<String>,
    last_text: String,
    last_at: String,
    request: bool,
    flagged: u64,
}

fn view_of(c: conversations::Summary, now_ms: u64) -> ConversationView {
    let window = Window::at(c.last_inbound_ms, now_ms);
    ConversationView {
        label: label(&c.customer, c.phone.as_deref()),
        customer: c.customer,
        phone: c.phone,
        unread: c.unread,
        window: window.describe(),
        window_open: window.open,
        assignee: c.assignee.map(|(_, name)| name),
        last_text: c.last_text.chars().take(120).collect(),
        last_at: at(c.last_message_ms),
        request: c.request,
        flagged: c.flagged,
    }
}

/// What the list says of opening hours at `now_ms` (nothing without them).
fn hours_text(away: Option<&crate::config::Away>, now_ms: u64) -> Option<&'static str> {
    let away = away?;
    Some(match (away.hours.is_open(now_ms), away.message.is_some()) {
        (true, _) => "Open now (opening hours).",
        (false, true) => {
            "Closed now (opening hours): a customer who writes gets the away message, once a day."
        }
        (false, false) => "Closed now (opening hours); no away message is set.",
    })
}

struct ResultView {
    customer: String,
    label: String,
    text: String,
    at: String,
}

#[derive(Template)]
#[template(path = "inbox/list.html")]
struct ListPage {
    me: Agent,
    csrf: String,
    search: String,
    hours: Option<&'static str>,
    views: Vec<(&'static str, &'static str, bool)>,
    conversations: Vec<ConversationView>,
    results: Vec<ResultView>,
}

#[derive(Deserialize)]
struct ListQuery {
    view: Option<String>,
    q: Option<String>,
}

async fn index(
    State(state): State<InboxState>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let view = View::parse(q.view.as_deref());
    let search = q.q.unwrap_or_default().trim().to_owned();
    let now = state.clock.now_ms();
    let mut conversations = Vec::new();
    let mut results = Vec::new();
    if search.is_empty() {
        conversations = conversations::list(&state.db, view, session.agent.id, LIST_LIMIT)?
            .into_iter()
            .map(|c| view_of(c, now))
            .collect();
    } else {
        for m in state.db.messages(None, Some(&search), LIST_LIMIT)? {
            let phone = state.db.phone_of(&m.customer)?;
            results.push(ResultView {
                label: label(&m.customer, phone.as_deref()),
                customer: m.customer,
                text: m.body,
                at: at(m.at_ms),
            });
        }
    }
    Ok(render(&ListPage {
        me: session.agent,
        csrf: session.csrf,
        search,
        hours: hours_text(state.away.as_deref(), now),
        views: vec![
            ("mine", "Mine", view == View::Mine),
            ("unassigned", "Unassigned", view == View::Unassigned),
            ("all", "All", view == View::All),
            ("requests", "Requests", view == View::Requests),
        ],
        conversations,
        results,
    }))
}

// ---- one conversation ----

struct MessageView {
    direction: String,
    text: String,
    at: String,
    status: &'static str,
    /// Why the client library flagged it (violation marks), if it did.
    flags: Vec<String>,
    /// A file the customer sent with it: its link and its name.
    file: Option<(String, String)>,
}

struct FlagView {
    message_id: String,
    reason: String,
    at: String,
}

struct AgentOption {
    id: i64,
    name: String,
    online: bool,
    selected: bool,
}

struct NoteView {
    author: String,
    body: String,
    at: String,
}

#[derive(Template)]
#[template(path = "inbox/conversation.html")]
struct ConversationPage {
    me: Agent,
    csrf: String,
    search: String,
    c: ConversationView,
    peer: &'static str,
    business: String,
    messages: Vec<MessageView>,
    agents: Vec<AgentOption>,
    notes: Vec<NoteView>,
    canned: Vec<Canned>,
    templates: Vec<ApprovedTemplate>,
    /// Violation marks on messages the page does not show (refused,
    /// forged replies, or older than the page).
    unshown_flags: Vec<FlagView>,
}

/// The verified state of both sides, as the page says it.
fn peer_text(state: Option<&PeerState>) -> (&'static str, String) {
    let customer = match state {
        Some(PeerState {
            identity_changed: true,
            ..
        }) => "identity changed: compare safety numbers before replying",
        Some(PeerState { verified: true, .. }) => "safety number verified",
        Some(_) => "safety number not verified",
        None => "verification state unavailable",
    };
    let business = match state.and_then(|s| s.business_verified_as.as_deref()) {
        Some(name) => format!("customers see the business as {name}, verified by the operator"),
        None => "customers see the business as not verified".to_owned(),
    };
    (customer, business)
}

async fn conversation(
    State(state): State<InboxState>,
    session: Session,
    Path(customer): Path<String>,
) -> Result<Response> {
    let account = customer_id(&customer)?;
    let summary = conversations::get(&state.db, &customer)?;
    if conversations::mark_read(&state.db, &customer)? {
        state.db.changed();
        tell_read(&state, account).await;
    }
    let now = state.clock.now_ms();
    let c = view_of(summary.clone(), now);
    let peer = ask(&state, |reply| Command::PeerState {
        customer: account,
        reply,
    })
    .await
    .and_then(|r| r.ok());
    let (peer, business) = peer_text(peer.as_ref());
    let templates = if c.window_open {
        Vec::new()
    } else {
        ask(&state, |reply| Command::ApprovedTemplates { reply })
            .await
            .and_then(|r| r.ok())
            .unwrap_or_default()
    };
    let assignee = summary.assignee.as_ref().map(|(id, _)| *id);
    let agents = agents::list(&state.db)?
        .into_iter()
        .filter(|a| !a.disabled)
        .map(|a| AgentOption {
            online: state.presence.is_online(a.id),
            selected: Some(a.id) == assignee,
            id: a.id,
            name: a.name,
        })
        .collect();
    let mut sent_files: HashMap<String, String> = state
        .db
        .attachments_of(&customer)?
        .into_iter()
        .map(|a| (a.message_id, a.file_name))
        .collect();
    let mut flags: Vec<Flag> = conversations::flags(&state.db, &customer)?;
    let messages = conversations::messages(&state.db, &customer)?
        .into_iter()
        .map(|m| {
            let (mine, rest) = flags.drain(..).partition(|f| f.message_id == m.id);
            flags = rest;
            MessageView {
                direction: m.direction,
                text: m.body,
                at: at(m.at_ms),
                status: m.status.as_str(),
                flags: mine.into_iter().map(|f: Flag| f.reason).collect(),
                file: sent_files
                    .remove(&m.id)
                    .map(|name| (files::href(&customer, &m.id), name)),
            }
        })
        .collect();
    let unshown_flags = flags
        .into_iter()
        .map(|f| FlagView {
            message_id: f.message_id,
            reason: f.reason,
            at: at(f.at_ms),
        })
        .collect();
    let notes = conversations::notes(&state.db, &customer)?
        .into_iter()
        .map(|n: Note| NoteView {
            author: n.author,
            body: n.body,
            at: at(n.at_ms),
        })
        .collect();
    Ok(render(&ConversationPage {
        me: session.agent,
        csrf: session.csrf,
        search: String::new(),
        c,
        peer,
        business,
        messages,
        agents,
        notes,
        canned: conversations::canned(&state.db)?,
        templates,
        unshown_flags,
    }))
}

async fn accept_request(
    State(state): State<InboxState>,
    session: Session,
    Path(customer): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    session.check_csrf(&form.csrf)?;
    let account = customer_id(&customer)?;
    conversations::get(&state.db, &customer)?;
    // The inbox's record first, then the client library (so that it stops
    // treating the customer as a stranger); a refusal, now or once a
    // queued accept is refused later, undoes the record. (Recorded after,
    // a late refusal could be undone before the record was made.)
    let recorded = conversations::accept_request(
        &state.db,
        &customer,
        session.agent.id,
        state.clock.now_ms(),
    )?;
    let undo = |state: &InboxState| {
        if recorded {
            conversations::undo_accept(&state.db, &customer, session.agent.id)?;
        }
        Ok::<_, InboxError>(())
    };
    let accepted = act(
        &state,
        "accepting the request",
        |reply| Command::AcceptRequest {
            customer: account,
            reply,
        },
        accept_refused_late(&state, &customer, session.agent.id, recorded),
    )
    .await;
    // Queued: the device accepts it once free; the read receipt (which
    // waits behind it) need not wait.
    let queued = match accepted {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            undo(&state)?;
            return Err(refused(e.into()));
        }
        Err(InboxError::Queued(what)) => Some(what),
        Err(e) => {
            undo(&state)?;
            return Err(e);
        }
    };
    // The agent accepted it from the page showing its messages: read.
    tell_read(&state, account).await;
    match queued {
        Some(what) => Err(InboxError::Queued(what)),
        None => Ok(back_to(&customer)),
    }
}

/// Have the device tell `customer` its messages were read (the receipt
/// waits in the outbox if the relay is away; a stopping daemon skips it).
async fn tell_read(state: &InboxState, customer: AccountId) {
    // Queued behind whatever the device is busy with, without holding up
    // the page: a full queue would keep it waiting for room.
    let commands = state.commands.clone();
    tokio::spawn(async move {
        let _ = commands.send(Command::MarkRead { customer }).await;
    });
}

fn back_to(customer: &str) -> Response {
    Redirect::to(&format!("/inbox/c/{customer}")).into_response()
}

fn refused(e: ApiError) -> InboxError {
    InboxError::Invalid(format!("Not sent: {}", e.message()))
}

#[derive(Deserialize)]
struct ReplyForm {
    csrf: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    canned: Option<i64>,
}

async fn reply(
    State(state): State<InboxState>,
    session: Session,
    Path(customer): Path<String>,
    Form(form): Form<ReplyForm>,
) -> Result<Response> {
    session.check_csrf(&form.csrf)?;
    let to = customer_id(&customer)?;
    let summary = conversations::get(&state.db, &customer)?;
    if !Window::at(summary.last_inbound_ms, state.clock.now_ms()).open {
        return Err(InboxError::Invalid(
            "the 24-hour window is closed: send an approved template".into(),
        ));
    }
    let text = match (form.text, form.canned) {
        (_, Some(id)) => conversations::canned_body(&state.db, id)?,
        (Some(text), None) => text,
        (None, None) => return Err(InboxError::Invalid("the reply is empty".into())),
    };
    if text.trim().is_empty() {
        return Err(InboxError::Invalid("the reply is empty".into()));
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(InboxError::Invalid(format!(
            "the reply is {} bytes; a message holds at most {MAX_TEXT_LEN}",
            text.len()
        )));
    }
    let late = note_if_refused(
        &state,
        &customer,
        session.agent.id,
        format!("Not sent: the reply “{}”", excerpt(&text)),
    );
    act(
        &state,
        "your reply",
        |reply| Command::SendText { to, text, reply },
        late,
    )
    .await?
    .map_err(|e| refused(e.into()))?;
    Ok(back_to(&customer))
}

async fn send_template(
    State(state): State<InboxState>,
    session: Session,
    Path(customer): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response> {
    session.check_csrf(form.get("csrf").map_or("", String::as_str))?;
    let to = customer_id(&customer)?;
    conversations::get(&state.db, &customer)?;
    let id = form
        .get("template")
        .and_then(|t| TemplateId::from_hex(t))
        .ok_or_else(|| InboxError::Invalid("pick a template".into()))?;
    let approved = ask(&state, |reply| Command::ApprovedTemplates { reply })
        .await
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let template = approved
        .into_iter()
        .find(|t| t.id == id.to_hex())
        .ok_or_else(|| InboxError::Invalid("that template is not approved".into()))?;
    let mut parameters = Vec::new();
    for (name, is_text) in &template.placeholders {
        let value = form
            .get(&format!("p.{name}"))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| InboxError::Invalid(format!("give a value for {name}")))?;
        let value = if *is_text {
            template_parameter::Value::Text(value)
        } else {
            template_parameter::Value::Number(
                value
                    .parse()
                    .map_err(|_| InboxError::Invalid(format!("{name} is a whole number")))?,
            )
        };
        parameters.push(TemplateParameter {
            name: name.clone(),
            value: Some(value),
        });
    }
    let late = note_if_refused(
        &state,
        &customer,
        session.agent.id,
        format!("Not sent: the template {}", template.name),
    );
    act(
        &state,
        "the template",
        |reply| Command::SendTemplate {
            to,
            template: TemplateRef::Id(id),
            parameters,
            reply,
        },
        late,
    )
    .await?
    .map_err(|e| refused(e.into()))?;
    Ok(back_to(&customer))
}

#[derive(Deserialize)]
struct AssignForm {
    csrf: String,
    agent: String,
    #[serde(default)]
    note: String,
}

async fn assign_to(
    State(state): State<InboxState>,
    session: Session,
    Path(customer): Path<String>,
    Form(form): Form<AssignForm>,
) -> Result<Response> {
    session.check_csrf(&form.csrf)?;
    customer_id(&customer)?;
    if form.agent.is_empty() {
        assign::assign(&state.db, &customer, None)?;
        return Ok(back_to(&customer));
    }
    let id: i64 = form
        .agent
        .parse()
        .map_err(|_| InboxError::Invalid("pick an agent".into()))?;
    let to = agents::get(&state.db, id)?.ok_or(InboxError::NotFound)?;
    if to.id == session.agent.id && form.note.trim().is_empty() {
        assign::assign(&state.db, &customer, Some(to.id))?;
    } else {
        assign::hand_off(
            &state.db,
            &customer,
            &session.agent,
            &to,
            &form.note,
            state.clock.now_ms(),
        )?;
    }
    Ok(back_to(&customer))
}

#[derive(Deserialize)]
struct NoteForm {
    csrf: String,
    body: String,
}

async fn add_note(
    State(state): State<InboxState>,
    session: Session,
    Path(customer): Path<String>,
    Form(form): Form<NoteForm>,
) -> Result<Response> {
    session.check_csrf(&form.csrf)?;
    customer_id(&customer)?;
    conversations::add_note(
        &state.db,
        &customer,
        session.agent.id,
        &form.body,
        state.clock.now_ms(),
    )?;
    Ok(back_to(&customer))
}

// ---- agents (admin) ----

struct AgentRow {
    id: i64,
    name: String,
    admin: bool,
    disabled: bool,
    online: bool,
}

#[derive(Template)]
#[template(path = "inbox/agents.html")]
struct AgentsPage {
    me: Agent,
    csrf: String,
    search: String,
    agents: Vec<AgentRow>,
    canned: Vec<Canned>,
}

async fn agents_page(State(state): State<InboxState>, session: Session) -> Result<Response> {
    session.require_admin()?;
    let agents = agents::list(&state.db)?
        .into_iter()
        .map(|a| AgentRow {
            online: state.presence.is_online(a.id),
            id: a.id,
            name: a.name,
            admin: a.admin,
            disabled: a.disabled,
        })
        .collect();
    Ok(render(&AgentsPage {
        canned: conversations::canned(&state.db)?,
        me: session.agent,
        csrf: session.csrf,
        search: String::new(),
        agents,
    }))
}

#[derive(Deserialize)]
struct AddAgentForm {
    csrf: String,
    name: String,
    password: String,
    #[serde(default)]
    admin: Option<String>,
}

async fn add_agent(
    State(state): State<InboxState>,
    session: Session,
    Form(form): Form<AddAgentForm>,
) -> Result<Response> {
    session.require_admin()?;
    session.check_csrf(&form.csrf)?;
    let password = zeroize::Zeroizing::new(form.password);
    let db = state.db.clone();
    let now = state.clock.now_ms();
    let admin = form.admin.is_some();
    let name = form.name.trim().to_owned();
    let added = tokio::task::spawn_blocking(move || agents::add(&db, &name, &password, admin, now))
        .await
        .map_err(|_| InboxError::Invalid("the agent could not be added".into()))??;
    tracing::info!(by = %session.agent.name, agent = %added.name, "agent added");
    Ok(Redirect::to("/inbox/agents").into_response())
}

#[derive(Deserialize)]
struct DisabledForm {
    csrf: String,
    disabled: String,
}

async fn set_disabled(
    State(state): State<InboxState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<DisabledForm>,
) -> Result<Response> {
    session.require_admin()?;
    session.check_csrf(&form.csrf)?;
    if id == session.agent.id {
        return Err(InboxError::Invalid(
            "an admin cannot disable themself".into(),
        ));
    }
    agents::set_disabled(&state.db, id, form.disabled == "1")?;
    Ok(Redirect::to("/inbox/agents").into_response())
}

#[derive(Deserialize)]
struct CannedForm {
    csrf: String,
    title: String,
    body: String,
}

async fn add_canned(
    State(state): State<InboxState>,
    session: Session,
    Form(form): Form<CannedForm>,
) -> Result<Response> {
    session.require_admin()?;
    session.check_csrf(&form.csrf)?;
    conversations::add_canned(&state.db, &form.title, &form.body)?;
    Ok(Redirect::to("/inbox/agents").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Away;
    use crate::hours::OpeningHours;

    #[test]
    fn the_list_says_whether_the_business_is_open() {
        let away = |message: Option<&str>| Away {
            hours: OpeningHours::parse("+00:00", &["mon-fri 09:00-18:00".to_owned()])
                .expect("hours"),
            message: message.map(str::to_owned),
        };
        // 2026-12-01 is a Tuesday.
        let tuesday_10h = 1_796_119_200_000;
        let tuesday_20h = tuesday_10h + 10 * 3600 * 1000;
        assert_eq!(hours_text(None, tuesday_10h), None);
        assert_eq!(
            hours_text(Some(&away(Some("Back at 9"))), tuesday_10h),
            Some("Open now (opening hours).")
        );
        assert!(
            hours_text(Some(&away(Some("Back at 9"))), tuesday_20h)
                .is_some_and(|t| t.contains("away message, once a day"))
        );
        assert!(hours_text(Some(&away(None)), tuesday_20h).is_some_and(|t| t.contains("no away")));
    }

    #[test]
    fn customers_are_named_by_shared_phone_or_account_prefix() {
        assert_eq!(
            label("0123456789abcdef", Some("+447700900123")),
            "+447700900123"
        );
        assert_eq!(label("0123456789abcdef", None), "Customer 01234567");
        assert_eq!(at(3_600_000 * 25 + 60_000 * 5), "01:05 UTC");
    }
}
