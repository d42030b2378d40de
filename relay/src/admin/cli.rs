//! `relay admin …`: the operator's commands, each one request to the
//! running relay's admin API. Answers are printed as JSON (one object per
//! line) on standard output; refusals as a sentence on standard error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::client::{AdminClient, AdminClientError};
use crate::operator::read_admin_token;

/// Options every `relay admin` command shares.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The relay's admin API address (its `admin_listen`).
    #[arg(
        long,
        env = "COMPTOIR_RELAY_ADMIN",
        value_name = "ADDR",
        default_value = crate::config::DEFAULT_ADMIN_LISTEN
    )]
    pub admin: SocketAddr,
    /// The admin token file the relay created (its `admin_token_file`;
    /// default: `admin.token` in the data directory).
    #[arg(long, env = "COMPTOIR_RELAY_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The relay's data directory, where the token file is by default.
    #[arg(
        long,
        env = "COMPTOIR_RELAY_DATA_DIR",
        value_name = "DIR",
        default_value = crate::config::DEFAULT_DATA_DIR
    )]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The operator's commands.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Print the operator's public key (clients pin it; give it to them
    /// out of band to pin before first use).
    OperatorKey,
    /// Review the templates businesses submitted.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// Verify businesses: certify or revoke their published profile.
    #[command(subcommand)]
    Business(BusinessCommand),
    /// Review reports: each is opened with the operator key and verified.
    #[command(subcommand)]
    Reports(ReportsCommand),
}

/// `relay admin reports …`.
#[derive(Debug, clap::Subcommand)]
pub enum ReportsCommand {
    /// One JSON line per report (oldest first), verified: valid only when
    /// the relay's franking tag checks and the commitment opens.
    List,
    /// One report, verified, check by check.
    Show {
        /// The report id.
        report_id: String,
    },
}

/// `relay admin business …`.
#[derive(Debug, clap::Subcommand)]
pub enum BusinessCommand {
    /// A business's published profile and its certificate state.
    Show {
        /// The business's account id (32 hex digits).
        account: String,
    },
    /// Certify the business's published profile: the operator key signs a
    /// certificate of its account key, display name and profile, and the
    /// name (and any name confusable with it) is reserved for it.
    Verify {
        /// The business's account id (32 hex digits).
        account: String,
        /// How long the certificate lasts (1 to 825 days).
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke the business's certificate: clients stop showing the mark.
    Revoke {
        /// The business's account id (32 hex digits).
        account: String,
    },
}

/// `relay admin templates …`.
#[derive(Debug, clap::Subcommand)]
pub enum TemplatesCommand {
    /// One line per template (oldest first): id, business, name,
    /// category, status.
    List {
        /// Only pending, approved, rejected or revoked ones.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
    },
    /// A template in full, with its state and signed decision.
    Show {
        /// The template id (64 hex digits).
        template_id: String,
    },
    /// Approve it: the operator key signs the approval, and the business
    /// may send it from now on.
    Approve {
        /// The template id (64 hex digits).
        template_id: String,
    },
    /// Reject a pending template; the business reads the reason.
    Reject {
        /// The template id (64 hex digits).
        template_id: String,
        /// Why, for the business.
        #[arg(long)]
        reason: String,
    },
    /// Revoke an approved template: sends naming it are refused from now
    /// on, and clients learn of the signed revocation.
    Revoke {
        /// The template id (64 hex digits).
        template_id: String,
    },
}

/// Run one admin command; exit 0 on success, 1 when the relay refused or
/// could not be reached, 2 for unusable local files.
pub fn run(args: AdminArgs) -> ExitCode {
    let token_path = args
        .token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(crate::operator::ADMIN_TOKEN_FILE));
    let token = match read_admin_token(&token_path) {
        Ok(token) => token,
        Err(error) => {
            eprintln!(
                "relay admin: {error} (the relay creates the token file at its first start; \
                 give its path with --token-file or the data directory with --data-dir)"
            );
            return ExitCode::from(2);
        }
    };
    let client = AdminClient::new(args.admin, token);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("relay admin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(&client, &args.command)) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("relay admin: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(
    client: &AdminClient,
    command: &AdminCommand,
) -> Result<Vec<serde_json::Value>, AdminClientError> {
    match command {
        AdminCommand::OperatorKey => {
            let key = client.operator_key().await?;
            Ok(vec![
                serde_json::json!({ "operator_key": key.operator_key }),
            ])
        }
        AdminCommand::Templates(command) => templates(client, command).await,
        AdminCommand::Reports(command) => {
            let json = match command {
                ReportsCommand::List => client
                    .reports()
                    .await?
                    .reports
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<Vec<_>, _>>(),
                ReportsCommand::Show { report_id } => {
                    serde_json::to_value(client.report(report_id).await?).map(|v| vec![v])
                }
            };
            json.map_err(|e| client.protocol(format!("cannot print the answer: {e}")))
        }
        AdminCommand::Business(command) => {
            let answer = match command {
                BusinessCommand::Show { account } => client.business(account).await?,
                BusinessCommand::Verify { account, days } => {
                    client.verify_business(account, Some(*days)).await?
                }
                BusinessCommand::Revoke { account } => client.revoke_business(account).await?,
            };
            serde_json::to_value(answer)
                .map(|v| vec![v])
                .map_err(|e| client.protocol(format!("cannot print the answer: {e}")))
        }
    }
}

async fn templates(
    client: &AdminClient,
    command: &TemplatesCommand,
) -> Result<Vec<serde_json::Value>, AdminClientError> {
    let json = match command {
        TemplatesCommand::List { status } => {
            let list = client.templates(status.as_deref()).await?;
            list.templates
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()
        }
        TemplatesCommand::Show { template_id } => {
            serde_json::to_value(client.template(template_id).await?).map(|v| vec![v])
        }
        TemplatesCommand::Approve { template_id } => {
            serde_json::to_value(client.approve_template(template_id).await?).map(|v| vec![v])
        }
        TemplatesCommand::Reject {
            template_id,
            reason,
        } => serde_json::to_value(client.reject_template(template_id, reason).await?)
            .map(|v| vec![v]),
        TemplatesCommand::Revoke { template_id } => {
            serde_json::to_value(client.revoke_template(template_id).await?).map(|v| vec![v])
        }
    };
    json.map_err(|e| client.protocol(format!("cannot print the answer: {e}")))
}
