//! Command-line arguments of `comptoir` (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use comptoir_client::tls::RelayUrl;
use comptoir_protocol::business::Vertical;

/// Text shown after `--help`: environment and exit codes.
const AFTER_HELP: &str = "\
Environment:
  COMPTOIR_PASSPHRASE  passphrase of the local store (otherwise asked on the terminal)
  COMPTOIR_DATA_DIR    same as --data-dir
  COMPTOIR_CONFIG      same as --config
  COMPTOIR_RELAY       same as --relay
  COMPTOIR_CA_CERT     same as --ca-cert
  COMPTOIR_OUTPUT      same as --output
  COMPTOIR_REGION      same as --region

Config file (optional; the command line and the environment win over it):
  $XDG_CONFIG_HOME/comptoir/config.toml (usually ~/.config/comptoir/config.toml)
  with any of: relay = \"wss://relay.example\", ca_cert = \"ca.pem\" (relative to the
  file), output = \"json\", region = \"GB\", keepalive_seconds = 20 (no sign of the
  relay this long: ping it; none half as long again: connect again; 1 to 3600)

Exit codes:
  0  success
  1  any other error (the message says what to do)
  2  bad command line
  3  wrong passphrase
  4  no account here yet (run init), already initialized, not registered (run register),
     not linked yet, this device was removed from its account, or a device command
     that only the first device can run
  5  relay unreachable or connection lost (a message being sent stays in the outbox)
  6  refused by the relay (for example: the recipient blocked you, or the name is taken)
  7  the contact's identity changed: compare safety numbers, then run `trust NAME --confirm NAME`
  8  unknown contact, no keys known for it yet, no such account on the relay, no
     account with that phone number or business name, or no such consent request or
     message request
  9  `listen --count` timed out before enough messages arrived
 10  `safety-number --verify`: the numbers differ (someone may be in the middle)";

/// Comptoir: end-to-end encrypted chat with people and businesses.
///
/// Your keys and history stay on this machine, encrypted with your
/// passphrase; the relay only forwards ciphertext.
#[derive(Debug, Parser)]
#[command(name = "comptoir", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Directory of this device's encrypted store (default: comptoir in
    /// the per-user data directory, usually ~/.local/share/comptoir;
    /// created readable by you only).
    #[arg(
        long = "data-dir",
        global = true,
        env = "COMPTOIR_DATA_DIR",
        value_name = "DIR"
    )]
    pub data_dir_arg: Option<PathBuf>,

    /// The data directory in use (set by [`Cli::resolve`]).
    #[arg(skip)]
    pub data_dir: PathBuf,

    /// Relay WebSocket URL: ws://host:port (this machine only, unless
    /// --insecure) or wss://host[:port] (default: the config file's relay,
    /// else ws://127.0.0.1:7700).
    #[arg(
        long = "relay",
        global = true,
        env = "COMPTOIR_RELAY",
        value_name = "URL",
        value_parser = relay_url,
    )]
    pub relay_arg: Option<String>,

    /// The relay address in use (set by [`Cli::resolve`]).
    #[arg(skip)]
    pub relay: String,

    /// How soon a dead link to the relay is noticed: the config file's
    /// `keepalive_seconds`, else the library's default (set by
    /// [`Cli::resolve`]).
    #[arg(skip)]
    pub keepalive: comptoir_client::Keepalive,

    /// Read defaults from this config file instead of
    /// ~/.config/comptoir/config.toml (see below).
    #[arg(long, global = true, env = "COMPTOIR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Also trust this CA certificate (PEM) for wss:// relays (default:
    /// relay-ca.pem in the data directory, if present, besides Mozilla's
    /// root certificates).
    #[arg(long, global = true, env = "COMPTOIR_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Allow plain ws:// to a relay that is not on this machine (the
    /// traffic can then be read and altered on the way).
    #[arg(long, global = true)]
    pub insecure: bool,

    /// How `send`, `listen`, `history`, `contacts list`, `devices list`,
    /// `requests list`, `consent requests` and `business consent answers`
    /// print their results: `text` for people, or `json`, one JSON object
    /// per line for scripts (errors stay text on standard error; the exit
    /// codes are the same).
    #[arg(long, global = true, env = "COMPTOIR_OUTPUT", value_enum)]
    pub output: Option<OutputFormat>,

    /// The country of phone numbers written without + and a country code
    /// (`07400 123456` with `--region GB`): a two-letter code.
    #[arg(long, global = true, env = "COMPTOIR_REGION", value_name = "CC", value_parser = crate::phone_number::parse_region)]
    pub region: Option<String>,

    /// Read the passphrase from the first line of this file (for scripts;
    /// keep the file private) instead of COMPTOIR_PASSPHRASE or the prompt.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The relay address when neither the command line, the environment nor
/// the config file gives one.
pub const DEFAULT_RELAY: &str = "ws://127.0.0.1:7700";

impl Cli {
    /// The output format asked for (text unless told otherwise).
    pub fn output_format(&self) -> OutputFormat {
        self.output.unwrap_or(OutputFormat::Text)
    }

    /// Fill in what the command line and the environment left out from
    /// the config file, then the defaults. An unreadable or invalid config
    /// file, or no data directory to default to, is an error saying what
    /// to fix.
    pub fn resolve(&mut self) -> Result<(), String> {
        let config = match &self.config {
            Some(path) => crate::config::load(path, true)?,
            None => match crate::config::default_config_file() {
                Some(path) => crate::config::load(&path, false)?,
                None => crate::config::Config::default(),
            },
        };
        let relay = match (&self.relay_arg, config.relay) {
            (Some(relay), _) => relay.clone(),
            (None, Some(relay)) => {
                relay_url(&relay).map_err(|e| format!("in the config file: {e}"))?
            }
            (None, None) => DEFAULT_RELAY.to_string(),
        };
        self.relay = relay;
        self.data_dir = match &self.data_dir_arg {
            Some(dir) => dir.clone(),
            None => crate::config::default_data_dir().ok_or(
                "no per-user data directory is known (HOME is not set): give one with --data-dir",
            )?,
        };
        if let Some(keepalive) = config
            .keepalive_seconds
            .and_then(comptoir_client::Keepalive::from_idle_seconds)
        {
            self.keepalive = keepalive;
        }
        if self.ca_cert.is_none() {
            self.ca_cert = config.ca_cert;
        }
        if self.output.is_none() {
            self.output = config.output;
        }
        if self.region.is_none() {
            self.region = match config.region {
                Some(region) => Some(
                    crate::phone_number::parse_region(&region)
                        .map_err(|e| format!("in the config file: {e}"))?,
                ),
                None => None,
            };
        }
        Ok(())
    }

    /// `comptoir`, with `--data-dir DIR` when one was given, for hints the
    /// user may copy as they are.
    pub fn comptoir(&self) -> String {
        match &self.data_dir_arg {
            Some(dir) => format!("comptoir --data-dir {}", crate::config::shell_word(dir)),
            None => "comptoir".to_string(),
        }
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line, for scripts.
    Json,
}

/// Check a `--relay` value when the command line is parsed, so a mistyped
/// address is a usage error before anything is stored or queued.
fn relay_url(value: &str) -> Result<String, String> {
    RelayUrl::parse(value).map_err(|_| {
        format!(
            "{value:?} is not a relay address: write ws://host:port (this machine) or \
             wss://host[:port], for example ws://127.0.0.1:7700"
        )
    })?;
    Ok(value.to_string())
}

/// The subcommands.
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Create a new account and device here (keys and encrypted store).
    Init,
    /// Create the account on the relay and upload prekeys.
    Register {
        /// Register a business account (it may claim a business name and
        /// replies as service); without it, a customer. Fixed for good.
        #[arg(long)]
        business: bool,
    },
    /// Make this directory a new device of an account you already have:
    /// prints a link code for `comptoir devices add` on your first device,
    /// then finish with `--finish <approval>`.
    LinkDevice {
        /// The approval printed by `comptoir devices add` on the first device.
        #[arg(long, value_name = "APPROVAL")]
        finish: Option<String>,
    },
    /// List, add or remove this account's devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Prove a phone number so people who know it can find you.
    #[command(subcommand)]
    Phone(PhoneCommand),
    /// Claim a business name so customers can find this account by it.
    #[command(subcommand)]
    Name(NameCommand),
    /// Print this account's id (give it to people who want to write to you).
    Whoami,
    /// Send a text message (at most 8192 bytes; a longer one is refused,
    /// not cut).
    Send {
        /// A contact name or a 32-character account id.
        to: String,
        /// The text, or `-` to read it from standard input (one final
        /// newline is dropped).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Send this file instead of a text (as `send-file` does).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// With --file: its MIME type, guessed from the extension when
        /// left out.
        #[arg(long = "type", value_name = "MIME")]
        content_type: Option<String>,
    },
    /// Send a file, end-to-end encrypted: it is encrypted under a fresh
    /// key, uploaded to the relay in chunks, and its key and digests go in
    /// the message. Images at most 5 MB, audio and video 16 MB, documents
    /// 100 MB (the relay's defaults).
    SendFile {
        /// A contact name or a 32-character account id.
        to: String,
        /// The file.
        path: PathBuf,
        /// Its MIME type (`image/jpeg`, `application/pdf`, …); guessed from
        /// the extension when left out.
        #[arg(long = "type", value_name = "MIME")]
        content_type: Option<String>,
    },
    /// Download a file someone sent, decrypt it and check both its
    /// digests; nothing is written unless everything checks.
    Save {
        /// Who sent it: a contact name or a 32-character account id.
        from: String,
        /// The message id (`listen` and `history` print it).
        message_id: String,
        /// Where to write the file (it must not exist).
        path: PathBuf,
    },
    /// Print incoming messages, one line each, until Ctrl-C.
    Listen {
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// With --count: give up after this many seconds (exit code 9).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Chat with one contact: type lines to send them, see replies as they arrive.
    Chat {
        /// A contact name or a 32-character account id.
        with: String,
    },
    /// Restore --data-dir (which must not exist) from a backup copy of it;
    /// conversations restart with fresh sessions, nothing is lost.
    Restore {
        /// The backup: a copy of a data directory taken while comptoir was not running.
        backup: PathBuf,
    },
    /// Open the terminal UI: conversations, chat, ticks, one-key block.
    Tui {
        /// Open this click-to-chat link (comptoir://chat/…): its business's
        /// conversation, the composer prefilled with the link's text.
        #[arg(long, value_name = "LINK", value_parser = crate::open_link::parse_link)]
        #[serde(with = "link_text::optional")]
        open: Option<comptoir_client::click_to_chat::ChatLink>,
    },
    /// Open a click-to-chat link (comptoir://chat/BUSINESS?text=…): shows
    /// the business as the operator verified it (✓ and its certified
    /// name) or by the link's handle, and the prefilled text, and sends
    /// the text once you confirm. Sending opens the business's 24-hour
    /// reply window; it is not consent to templates.
    Open {
        /// The link.
        #[arg(value_parser = crate::open_link::parse_link)]
        #[serde(with = "link_text")]
        link: comptoir_client::click_to_chat::ChatLink,
        /// Send the prefilled text without asking (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Show the conversation with a contact.
    History {
        /// A contact name or a 32-character account id.
        with: String,
    },
    /// Manage the address book.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// See or cancel messages waiting to be sent (written while the relay
    /// was unreachable).
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Show the safety number to compare with a contact (in person or on a call).
    SafetyNumber {
        /// A contact name or a 32-character account id.
        with: String,
        /// The 60 digits your contact reads out: checks they match yours
        /// and marks the contact verified (exit code 10 if they differ).
        #[arg(long, value_name = "DIGITS")]
        verify: Option<String>,
    },
    /// Accept a contact's new identity after comparing safety numbers.
    Trust {
        /// A contact name or a 32-character account id.
        with: String,
        /// Type the contact's name (or, without one, its account id) again
        /// to accept the new identity; without it, the old and new safety
        /// numbers are shown and nothing changes.
        #[arg(long, value_name = "CONTACT")]
        confirm: Option<String>,
    },
    /// Let a business send you templates (order updates, codes, offers),
    /// stop it, or list who may.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// First messages from accounts you never wrote to wait here until you
    /// accept or delete them (no read receipt goes back until you accept).
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// Answer a template message with one of its quick-reply buttons, or
    /// an interactive message with one of its buttons or list rows (the
    /// business receives which one you chose).
    Reply {
        /// The business: a contact name or a 32-character account id.
        business: String,
        /// The message's id (32 hex digits, as `listen`, `chat` and
        /// `history` print it).
        message_id: String,
        /// The button's number as `listen`, `chat` and `history` show it,
        /// from 1; for a list, the row's id shown in brackets.
        choice: String,
    },
    /// Business accounts: publish the profile, submit and send templates,
    /// ask customers for consent; anyone: show a business.
    #[command(subcommand)]
    Business(BusinessCommand),
    /// Status: text, an image or a video of at most 30 s, shown for 24
    /// hours to your conversations (a business: to customers who consented
    /// to Status).
    #[command(subcommand)]
    Status(StatusCommand),
    /// Show the operator key this device trusts (pinned at the first
    /// connection), or pin another one after checking it with the operator.
    OperatorKey {
        /// Trust this key (64 hex digits) from now on: only after the
        /// operator confirmed it, for example after a key rotation.
        #[arg(long, value_name = "HEX")]
        pin: Option<String>,
    },
    /// Make the relay refuse every message from this account to you.
    Block {
        /// A contact name or a 32-character account id.
        who: String,
        /// Why (a business only): counts towards the business's quality
        /// rating with the operator.
        #[arg(long, value_enum)]
        reason: Option<BlockReasonArg>,
    },
    /// Report a message you received to the relay's operator: it reveals
    /// that message (and only it) to the operator, who can check that its
    /// sender sent exactly this.
    Report {
        /// The message's id (32 hex digits, as `listen`, `chat` and
        /// `history` print it).
        message_id: String,
        /// Why, for the operator (at most 500 bytes).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a block.
    Unblock {
        /// A contact name or a 32-character account id.
        who: String,
    },
    /// Hold the account and its relay connection for other programs, over
    /// JSON-RPC.
    ///
    /// Serves JSON-RPC 2.0 (one JSON object per line) on daemon.sock in
    /// the data directory, readable by you only, until Ctrl-C or SIGTERM.
    /// While it runs, `whoami`, `send`, `history`, `contacts list`,
    /// `devices list`, `block`, `unblock`, `listen`, `chat` and `tui` go
    /// through it (they need no passphrase then); other commands ask you
    /// to stop it first. docs/CLIENT-RPC.md lists the methods.
    Daemon {
        /// Also serve JSON-RPC on standard input and output (for a
        /// program that starts the daemon itself); the daemon stops when
        /// standard input closes.
        #[arg(long)]
        stdio: bool,
    },
    /// Print a shell completion script, for example:
    /// `comptoir completions bash > ~/.local/share/bash-completion/completions/comptoir`.
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Print the manual page (roff), for example: `comptoir man | man -l -`.
    Man,
}

/// Shells `comptoir completions` writes scripts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Shell {
    /// GNU Bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => Self::Bash,
            Shell::Zsh => Self::Zsh,
            Shell::Fish => Self::Fish,
        }
    }
}

/// `comptoir contacts ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum ContactsCommand {
    /// Give an account a name: by its id, by a phone number its owner
    /// made discoverable, or by a business name (each checked with the
    /// relay). A name already in use is not re-pointed without --force.
    Add {
        /// The name to use in other commands.
        name: String,
        /// A 32-character account id, a phone number (+44 7400 123456, or
        /// 07400 123456 with --region GB) or a business name
        /// (acme-deliveries).
        account: String,
        /// Re-point a name that already names another account (a verified
        /// mark does not carry over: compare safety numbers again).
        #[arg(long)]
        force: bool,
    },
    /// Forget a contact's name (its conversation stays).
    Remove {
        /// The contact's name.
        name: String,
    },
    /// Give a contact another name.
    Rename {
        /// The contact's name now.
        old: String,
        /// The new name (not in use yet).
        new: String,
    },
    /// List contacts.
    List,
}

/// `comptoir outbox ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum OutboxCommand {
    /// List the messages waiting to be sent: id, recipient, time written,
    /// text (tab-separated, oldest first).
    List,
    /// Never send this message (it stays in the history as failed).
    Cancel {
        /// The message id (see `outbox list`).
        id: String,
    },
}

/// `comptoir devices ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum DevicesCommand {
    /// Show this account's devices (from its signed device list).
    List,
    /// On the first device: add the device that printed this link code.
    Add {
        /// The code `comptoir link-device` printed on the new device.
        link_code: String,
        /// What to call it in `devices list` (kept on this device only).
        #[arg(long)]
        name: Option<String>,
    },
    /// Call a device something in `devices list` (kept on this device
    /// only; the relay never sees it).
    Name {
        /// The device id (see `devices list`).
        device_id: u32,
        /// The name, such as laptop.
        name: String,
    },
    /// On the first device: remove a device; it stops receiving at once.
    Remove {
        /// The device id (see `devices list`).
        device_id: u32,
    },
}

/// `comptoir consent ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum ConsentCommand {
    /// Let a business send you templates of these categories outside the
    /// 24-hour reply window (marketing needs it at all), for some days.
    /// Replaces what you granted it before.
    Grant {
        /// A contact name or a 32-character account id of a business.
        business: String,
        /// Comma-separated: utility, authentication, marketing.
        #[arg(long, value_delimiter = ',', required = true)]
        categories: Vec<ConsentCategory>,
        /// How long it lasts, in days (1 to 730).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=730))]
        days: u32,
    },
    /// Stop a business from sending you templates outside the window.
    Revoke {
        /// A contact name or a 32-character account id of a business.
        business: String,
    },
    /// List the businesses you granted (or revoked) consent to.
    List,
    /// List the businesses asking for your consent (after you gave them
    /// your phone number): request id, business (✓ and its certified name
    /// when the operator verified it, otherwise its contact name or
    /// account id), categories and purpose.
    Requests,
    /// Allow a consent request: the business may send you templates of
    /// the categories it asked for, and learns your account id.
    Allow {
        /// The request id (32 hex digits, as `consent requests` prints it).
        id: String,
        /// How long the consent lasts, in days (1 to 730).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=730))]
        days: u32,
    },
    /// Refuse a consent request: the business is not told who you are and
    /// cannot ask again for 30 days.
    Refuse {
        /// The request id (32 hex digits, as `consent requests` prints it).
        id: String,
    },
}

/// `comptoir requests ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum RequestsCommand {
    /// List the accounts whose messages wait as requests: account, contact
    /// name if any, when the first arrived (oldest first).
    List,
    /// Accept an account's request: its messages become an ordinary
    /// conversation (read receipts included).
    Accept {
        /// A contact name or a 32-character account id.
        who: String,
    },
    /// Delete an account's request and what it sent; a later message from
    /// it is a request again (`block` stops it for good).
    Delete {
        /// A contact name or a 32-character account id.
        who: String,
    },
}

/// `comptoir business ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum BusinessCommand {
    /// Publish this business account's profile (on its first device). The
    /// operator then verifies it (`relay admin business verify ACCOUNT`);
    /// publishing again takes the verified mark away until the operator
    /// verifies the new profile.
    Profile {
        /// The display name customers see once the operator verified it.
        #[arg(long)]
        name: String,
        /// A short description.
        #[arg(long, default_value = "")]
        about: String,
        /// The postal address.
        #[arg(long, default_value = "")]
        address: String,
        /// The website (https://…).
        #[arg(long)]
        website: Option<String>,
        /// A contact email address.
        #[arg(long)]
        email: Option<String>,
        /// Opening hours, as free text ("Mon-Fri 9:00-17:00").
        #[arg(long, default_value = "")]
        hours: String,
        /// What the business does.
        #[arg(long, value_parser = parse_vertical, default_value = "other")]
        vertical: Vertical,
    },
    /// Submit, list or send approved templates.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Ask customers for consent by phone number, and read who allowed.
    #[command(subcommand)]
    Consent(BusinessConsentCommand),
    /// Send a customer reply buttons (up to 3) or a list (up to 10 rows)
    /// in a free-form reply, inside the 24-hour window; prints the message
    /// id. The customer's choice arrives in `listen`.
    Interactive {
        /// The customer: a contact name or a 32-character account id.
        customer: String,
        /// The text above the choices.
        #[arg(long)]
        body: String,
        /// A reply button's title (up to 3 times, at most 20 characters).
        #[arg(long = "button")]
        buttons: Vec<String>,
        /// The label of the button that opens the list (with --row).
        #[arg(long)]
        list_button: Option<String>,
        /// A list row, `[SECTION/]ID:TITLE[:DESCRIPTION]` (up to 10 times;
        /// rows of one section are grouped).
        #[arg(long = "row")]
        rows: Vec<String>,
    },
    /// Show a business's profile and whether the operator verified it
    /// (✓ and the certified name), as customers see it.
    Show {
        /// A contact name, a 32-character account id or a claimed business
        /// name (acme-air).
        business: String,
    },
    /// This business's bill.
    #[command(subcommand)]
    Bill(BillCommand),
    /// Print this business's click-to-chat link and its QR code (for a
    /// terminal with light text on a dark background); customers open it
    /// with `comptoir open LINK`.
    Link {
        /// Name the business by the name it claimed (`comptoir name claim`)
        /// rather than by its account id; checked with the relay.
        #[arg(long)]
        name: Option<String>,
        /// Text to prefill in the customer's composer.
        #[arg(long, value_parser = crate::open_link::parse_text)]
        text: Option<String>,
        /// Also write the QR code as SVG to this file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Also write the QR code as PNG to this file.
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
    },
    /// This business's standing: its bill so far, the customers it reached
    /// with templates today, its quality rating (high, medium, low), its
    /// messaging tier and how much of its limit it used in the last 24
    /// hours.
    Status,
}

/// `comptoir business bill ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum BillCommand {
    /// Fetch the whole bill and check every line: the hash chain, the
    /// operator's signatures (against the pinned operator key), each
    /// customer device's signed delivery (against the customer's signed
    /// device list) and each price (against the operator-signed rate
    /// card). Prints the totals; exits 1 naming the first line that does
    /// not check.
    Verify,
}

/// `comptoir business template ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum TemplateCommand {
    /// Submit a template written as JSON for the operator's review; prints
    /// its id and status (pending until `relay admin templates approve ID`).
    /// The file: {"business": "<this account id>", "name": "boarding_pass",
    /// "language": "en_GB", "category": "utility", "header": "Flight {{flight}}",
    /// "body": "Gate {{gate}} closes at {{closes}}.", "footer": "Acme Air",
    /// "placeholders": [{"name": "flight", "type": "text"}, …],
    /// "buttons": [{"type": "quick_reply", "text": "Change seat"}]}
    /// (`business` may be left out: it is this account; placeholder types:
    /// text, number, money, date_time; buttons: quick_reply, link with
    /// url, call with phone; a body refers to a placeholder as
    /// {{name}}).
    Submit {
        /// The JSON file, or `-` for standard input.
        file: PathBuf,
    },
    /// List this account's templates: id, status, category, name (and the
    /// operator's reason for a rejected one).
    List,
    /// Send a customer an instance of an approved template.
    Send {
        /// The customer: a contact name or a 32-character account id (see
        /// `business consent answers`).
        customer: String,
        /// The template id (64 hex digits, see `business template list`).
        template_id: String,
        /// A value for each placeholder, NAME=VALUE, typed as the template
        /// says: text as is; number: a whole number (-12); money: an amount
        /// and an ISO 4217 currency code (`12.50 GBP`, `12 GBP`, `1000 JPY`,
        /// with at most the currency's decimal places); date_time: RFC 3339
        /// (`2026-12-01T08:40:00Z`, an offset is allowed; shown in UTC to
        /// the minute).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
}

/// `comptoir business consent ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum BusinessConsentCommand {
    /// Ask whoever holds this phone number for consent (verified businesses
    /// only). The answer is the same whether or not the number is known;
    /// an allowance shows up in `business consent answers` under the
    /// reference printed.
    Request {
        /// The phone number: +44 7400 123456, or 07400 123456 with --region GB.
        number: String,
        /// Comma-separated: utility, authentication, marketing.
        #[arg(long, value_delimiter = ',', required = true)]
        categories: Vec<ConsentCategory>,
        /// Why, from a fixed list (what the customer reads).
        #[arg(long, value_enum)]
        purpose: PurposeArg,
    },
    /// List the consent requests customers allowed: reference, customer
    /// account id, when.
    Answers,
}

/// The purposes a consent request may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum PurposeArg {
    /// Order updates.
    OrderUpdates,
    /// Delivery updates.
    DeliveryUpdates,
    /// Boarding passes and flight updates.
    BoardingPass,
    /// Appointment reminders.
    AppointmentReminders,
    /// Account security codes.
    SecurityCodes,
}

/// `business profile --vertical`: one of the protocol's verticals
/// ([`Vertical::ALL`]), by its name (`travel`, `non-profit` or
/// `non_profit`).
pub fn parse_vertical(text: &str) -> Result<Vertical, String> {
    let name = |v: Vertical| {
        serde_json::to_value(v)
            .ok()
            .and_then(|j| j.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let wanted = text.trim().to_ascii_lowercase().replace('-', "_");
    Vertical::ALL
        .into_iter()
        .find(|v| name(*v) == wanted)
        .ok_or_else(|| {
            let all: Vec<String> = Vertical::ALL.into_iter().map(name).collect();
            format!("one of: {}", all.join(", "))
        })
}

/// Why a customer blocks a business (`block --reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum BlockReasonArg {
    /// The customer no longer needs its messages.
    NoLongerNeeded,
    /// The customer never signed up for them.
    DidNotSignUp,
    /// Spam.
    Spam,
    /// Offensive messages.
    Offensive,
}

/// A category of templates a consent covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum ConsentCategory {
    /// Order, delivery, booking and account updates.
    Utility,
    /// One-time codes.
    Authentication,
    /// Offers and promotions.
    Marketing,
    /// The business's Status posts.
    Status,
}

/// `comptoir status ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum StatusCommand {
    /// Post a Status for 24 hours: encrypted once, uploaded once, its key
    /// sent to each account you have a conversation with (and those named
    /// with --to). A business's goes to its subscribers, the customers who
    /// consented to Status (those who never wrote to it too): the relay
    /// refuses any other, and they are listed.
    Post {
        /// The text (at most 700 bytes).
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        text: Option<String>,
        /// An image (.png, .jpg, .gif, .webp) or an MP4 video of at most
        /// 30 seconds.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Also send it to this contact name or account id (repeatable).
        #[arg(long = "to", value_name = "CONTACT")]
        to: Vec<String>,
    },
    /// List the Status posts of the last 24 hours: who posted, when, what;
    /// for yours, who chose to tell you they viewed it.
    List,
    /// Download a Status, check both digests and decrypt it: a text is
    /// printed, a file written to --save-to. The poster learns you viewed
    /// it only with --receipt.
    View {
        /// The post id (32 hex digits, or its first 8 or more).
        id: String,
        /// Where to write an image or video (it must not exist).
        #[arg(long, value_name = "PATH")]
        save_to: Option<PathBuf>,
        /// Tell the poster you viewed it.
        #[arg(long)]
        receipt: bool,
    },
    /// Delete your Status before its 24 hours are up: at the relay, here,
    /// and at each account it went to.
    Delete {
        /// The post id (32 hex digits, or its first 8 or more).
        id: String,
    },
    /// A business's Status subscribers: the customers whose consent covers
    /// Status (as the relay keeps it), and whether each ever wrote to you.
    Subscribers {
        /// Only those who never wrote to you.
        #[arg(long)]
        never_wrote: bool,
    },
}

/// `comptoir name ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum NameCommand {
    /// Claim a business name for this account (first come, first served;
    /// one per account). A name confusable with a verified business's is
    /// refused.
    Claim {
        /// 3 to 32 characters: letters a-z (upper case is lowered), digits
        /// and '-', not starting or ending with '-'.
        name: String,
    },
}

/// `comptoir phone ...`
#[derive(Clone, Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum PhoneCommand {
    /// Ask the relay to send a verification code to this number (a
    /// development relay writes it to its log instead).
    Request {
        /// The phone number: +44 7400 123456, or 07400 123456 with --region GB.
        number: String,
    },
    /// Prove the number with the code received.
    Verify {
        /// The phone number, as for `phone request`.
        number: String,
        /// The code received.
        code: String,
        /// Let people who know the number find this account.
        #[arg(long)]
        discoverable: bool,
    },
}

/// A click-to-chat link in a command sent to a running daemon: as its
/// text, parsed again on the other side.
mod link_text {
    use comptoir_client::click_to_chat::ChatLink;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(link: &ChatLink, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(link)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ChatLink, D::Error> {
        let text = String::deserialize(d)?;
        ChatLink::parse(&text).map_err(serde::de::Error::custom)
    }

    pub(super) mod optional {
        use comptoir_client::click_to_chat::ChatLink;
        use serde::{Deserialize, Deserializer, Serializer};

        pub(in crate::args) fn serialize<S: Serializer>(
            link: &Option<ChatLink>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match link {
                Some(link) => s.collect_str(link),
                None => s.serialize_none(),
            }
        }

        pub(in crate::args) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<ChatLink>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| ChatLink::parse(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_config_files_keepalive_is_the_connections() {
        use clap::Parser;
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "keepalive_seconds = 4\n").expect("write");
        let data = dir.path().join("data");
        let args = [
            "comptoir",
            "--data-dir",
            path(&data),
            "--config",
            path(&config),
        ];
        let mut cli = Cli::try_parse_from([args.as_slice(), &["whoami"]].concat()).expect("parses");
        assert_eq!(cli.keepalive, comptoir_client::Keepalive::default());
        cli.resolve().expect("resolves");
        assert_eq!(
            cli.keepalive,
            comptoir_client::Keepalive {
                idle: Duration::from_secs(4),
                answer_within: Duration::from_secs(2),
            }
        );
    }

    fn path(path: &std::path::Path) -> &str {
        path.to_str().expect("a UTF-8 temp path")
    }

    #[test]
    fn help_is_consistent_and_lists_exit_codes() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"));
        assert!(help.contains("COMPTOIR_PASSPHRASE"));
    }
}
