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
    /// Export businesses' bills.
    #[command(subcommand)]
    Bills(BillsCommand),
}

/// `relay admin bills …`.
#[derive(Debug, clap::Subcommand)]
pub enum BillsCommand {
    /// A business's billed lines delivered in a time range, with totals per
    /// category (the sums of the lines, exact in millionths; the grand
    /// total also rounded once, half up, to hundredths).
    Export {
        /// The business's account id (32 hex digits).
        #[arg(long)]
        business: String,
        /// Start of the range (included): a UTC date `YYYY-MM-DD` or ms
        /// since the epoch; default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// End of the range (excluded): a UTC date `YYYY-MM-DD` or ms since
        /// the epoch; default: no end.
        #[arg(long)]
        to: Option<String>,
        /// `csv` or `json`.
        #[arg(long, default_value = "json")]
        format: String,
    },
}

/// A time given as ms since the epoch or a UTC date `YYYY-MM-DD` (its
/// midnight).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is neither a date YYYY-MM-DD nor ms since the epoch");
    if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        return text.parse().map_err(|_| bad());
    }
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400_000).map_err(|_| bad())
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
    /// A business's published profile, its certificate state, and its
    /// quality rating, messaging tier and usage (only those when it
    /// published no profile).
    Show {
        /// The business's account id (32 hex digits).
        account: String,
    },
    /// Fix the business's messaging tier, or give it back to evaluation.
    Tier {
        /// The business's account id (32 hex digits).
        account: String,
        /// `1` to `5` (`5`, or `unlimited`, has no limit), or `auto`.
        tier: String,
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
    /// language, category, status, submission time.
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
    if let AdminCommand::Bills(BillsCommand::Export {
        business,
        from,
        to,
        format,
    }) = &args.command
    {
        let times = (
            from.as_deref().map(parse_time).transpose(),
            to.as_deref().map(parse_time).transpose(),
        );
        let (from_ms, to_ms) = match times {
            (Ok(from), Ok(to)) => (from, to),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("relay admin: {e}");
                return ExitCode::from(2);
            }
        };
        return match runtime.block_on(client.export_bill(business, from_ms, to_ms, format)) {
            Ok(text) => {
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("relay admin: {error}");
                ExitCode::FAILURE
            }
        };
    }
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
        // Printed as the API wrote it, by `run`.
        AdminCommand::Bills(_) => Ok(Vec::new()),
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
                BusinessCommand::Show { account } => match client.business(account).await {
                    Err(AdminClientError::Refused { error, .. }) if error == "unknown_business" => {
                        return serde_json::to_value(client.business_quality(account).await?)
                            .map(|v| vec![serde_json::json!({ "quality": v })])
                            .map_err(|e| client.protocol(format!("cannot print the answer: {e}")));
                    }
                    answer => answer?,
                },
                BusinessCommand::Tier { account, tier } => {
                    return serde_json::to_value(client.set_business_tier(account, tier).await?)
                        .map(|v| vec![v])
                        .map_err(|e| client.protocol(format!("cannot print the answer: {e}")));
                }
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

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_dates_or_milliseconds() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_time("2026-12-01"), Ok(1_796_083_200_000));
        assert!(parse_time("2026-13-01").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
