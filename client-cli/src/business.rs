//! `comptoir business …`: what a business account does from scripts
//! (publish its profile, submit, list and send templates, ask customers for
//! consent and read their answers), and how any screen of this CLI shows a
//! business: [`business_label`], on the library's one decision
//! ([`comptoir_client::BusinessView::shown_name`]).

use std::io::{Read, Write};

use comptoir_client::error::{ClientError, Result};
use comptoir_client::{Client, purpose_text};
use comptoir_protocol::AccountId;
use comptoir_protocol::business::{BusinessProfile, Vertical};
use comptoir_protocol::proto::wire::{ConsentPurpose, TemplateStatus};
use comptoir_protocol::template::{Template, TemplateId};

use crate::args::{
    BillCommand, BusinessCommand, BusinessConsentCommand, Cli, OutputFormat, PurposeArg,
    TemplateCommand,
};
use crate::format::{date_time, visible};
use crate::json::{self, Record};
use crate::template_values::parse_params;
use crate::{category_set, find_account, phone_number};

/// How a business is shown: its certified name with a ✓ when the
/// operator verified it (checked against the pinned keys), otherwise its
/// handle here (contact name or account id), never its self-chosen name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// The name, already made [`visible`].
    pub name: String,
    /// Whether to show the verified mark.
    pub verified: bool,
}

impl Shown {
    /// `✓ Acme Air`, or the handle alone.
    pub fn text(&self) -> String {
        if self.verified {
            format!("✓ {}", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// How to show `account`: asks the relay for its profile and certificate
/// (the client must be connected). An account that is not a business, or
/// whose profile cannot be fetched, is shown by its handle.
pub async fn business_label(client: &mut Client, account: AccountId) -> Result<Shown> {
    let handle = match client.contact_name(&account)? {
        Some(name) => name,
        None => account.to_string(),
    };
    let view = match client.business(account).await {
        Ok(view) => view,
        Err(
            e @ (ClientError::Database(_) | ClientError::CorruptStore(_) | ClientError::Io { .. }),
        ) => return Err(e),
        Err(_) => {
            return Ok(Shown {
                name: visible(&handle),
                verified: false,
            });
        }
    };
    Ok(Shown {
        name: visible(view.shown_name(&handle)),
        verified: view.verification.is_verified(),
    })
}

/// How to show `account` offline: as [`comptoir_client::Client::business`]
/// last checked it (the ✓ and certified name of a business verified then,
/// until its certificate expires), otherwise by its handle.
pub fn known_label(client: &Client, account: &AccountId) -> Result<Shown> {
    let handle = match client.contact_name(account)? {
        Some(name) => name,
        None => account.to_string(),
    };
    let view = client.known_business(account)?;
    Ok(match view {
        Some(view) => Shown {
            name: visible(view.shown_name(&handle)),
            verified: view.verification.is_verified(),
        },
        None => Shown {
            name: visible(&handle),
            verified: false,
        },
    })
}

/// Run `comptoir business …`.
pub(crate) async fn run(
    cli: &Cli,
    source: &mut crate::account::Source<'_>,
    command: &BusinessCommand,
    out: &mut dyn Write,
) -> Result<u8> {
    let json = cli.output_format() == OutputFormat::Json;
    let c = cli.comptoir();
    let mut client = source.open(cli)?;
    client.connect(&cli.relay).await?;
    let result = match command {
        BusinessCommand::Profile {
            name,
            about,
            address,
            website,
            email,
            hours,
            vertical,
        } => {
            let profile = BusinessProfile {
                account: client.account_id(),
                display_name: name.clone(),
                about: about.clone(),
                address: address.clone(),
                website: website.clone(),
                email: email.clone(),
                opening_hours: hours.clone(),
                vertical: *vertical,
            };
            client.publish_profile(&profile).await?;
            say!(out, "{}", client.account_id());
            note!(
                "profile published; customers see it unverified (by your business name or \
                 account id) until the operator runs `relay admin business verify {}`",
                client.account_id()
            );
            Ok(0)
        }
        BusinessCommand::Template(TemplateCommand::Submit { file }) => {
            let template = read_template(&client, file)?;
            let (id, status) = client.submit_template(&template).await?;
            say!(out, "{id}\t{}", status_name(status));
            note!(
                "the operator reviews it (`relay admin templates approve {id}`); see where it \
                 stands with `{c} business template list`"
            );
            Ok(0)
        }
        BusinessCommand::Bill(BillCommand::Verify) => {
            let bill = client.fetch_bill().await?;
            let totals = client.verify_bill(&bill).await?;
            let currency = bill.rate_card.currency.clone();
            let categories = categories(&totals.per_category);
            if json {
                json::write(
                    out,
                    &Record::Bill {
                        lines: totals.lines,
                        currency,
                        total_millionths: totals.total_millionths,
                        total: rounded(totals.total_millionths),
                        categories,
                    },
                )?;
            } else {
                say!(
                    out,
                    "bill checked: {} line{}, {} {currency} ({} millionths)",
                    totals.lines,
                    if totals.lines == 1 { "" } else { "s" },
                    rounded(totals.total_millionths),
                    totals.total_millionths
                );
                for c in categories {
                    say!(out, "{}\t{}\t{}", c.category, c.lines, c.millionths);
                }
            }
            Ok(0)
        }
        BusinessCommand::Link {
            name,
            text,
            svg,
            png,
        } => {
            crate::open_link::business_link(
                &mut client,
                cli,
                name.as_deref(),
                text.as_deref(),
                (svg.as_ref(), png.as_ref()),
                out,
            )
            .await
        }
        BusinessCommand::Status => {
            let standing = client.standing().await?;
            let mut per_category = [(0, 0); comptoir_protocol::bill::BILLED_CATEGORIES.len()];
            for t in &standing.totals {
                if let Some(i) = comptoir_protocol::bill::BILLED_CATEGORIES
                    .iter()
                    .position(|&c| {
                        comptoir_protocol::proto::wire::Category::from(c) as i32 == t.category
                    })
                {
                    per_category[i] = (t.lines, t.millionths);
                }
            }
            let categories = categories(&per_category);
            if json {
                json::write(
                    out,
                    &Record::Standing {
                        lines: standing.lines,
                        currency: standing.currency.clone(),
                        total_millionths: standing.total_millionths,
                        total: rounded(standing.total_millionths),
                        categories,
                        customers_reached_today: standing.customers_reached_today,
                        rating: visible(&standing.rating),
                        tier: visible(&standing.tier),
                        tier_limit: (standing.tier_limit != 0).then_some(standing.tier_limit),
                        tier_overridden: standing.tier_overridden,
                        customers_reached_24h: standing.customers_reached_24h,
                        customers_reached_7d: standing.customers_reached_7d,
                        next_slot_at_ms: (standing.next_slot_at_ms != 0)
                            .then_some(standing.next_slot_at_ms),
                        next_evaluation_ms: standing.next_evaluation_ms,
                        verified_reports_7d: standing.verified_reports_7d,
                        blocks_7d: standing.blocks_7d,
                    },
                )?;
            } else {
                say!(
                    out,
                    "bill so far: {} line{}, {} {} ({} millionths)",
                    standing.lines,
                    if standing.lines == 1 { "" } else { "s" },
                    rounded(standing.total_millionths),
                    visible(&standing.currency),
                    standing.total_millionths
                );
                for c in categories {
                    say!(out, "{}\t{}\t{}", c.category, c.lines, c.millionths);
                }
                say!(
                    out,
                    "customers reached today: {}",
                    standing.customers_reached_today
                );
                let tier = if standing.tier.is_empty() {
                    "not set"
                } else {
                    &standing.tier
                };
                say!(
                    out,
                    "rating: {}; tier: {}{}",
                    visible(&standing.rating),
                    visible(tier),
                    if standing.tier_overridden {
                        " (set by the operator)"
                    } else {
                        ""
                    }
                );
                let limit = match standing.tier_limit {
                    0 => "unlimited".to_owned(),
                    n => n.to_string(),
                };
                say!(
                    out,
                    "customers reached in the last 24 hours: {} of {limit}",
                    standing.customers_reached_24h
                );
                say!(
                    out,
                    "in the last 7 days: {} customers reached, {} verified reports, {} blocks",
                    standing.customers_reached_7d,
                    standing.verified_reports_7d,
                    standing.blocks_7d
                );
            }
            Ok(0)
        }
        BusinessCommand::Template(TemplateCommand::List) => {
            for info in client.own_templates().await? {
                let mut line = format!(
                    "{}\t{}\t{}\t{}",
                    info.template_id,
                    status_name(info.status),
                    info.template.category.name(),
                    visible(&info.template.name)
                );
                if !info.reason.is_empty() {
                    line.push('\t');
                    line.push_str(&visible(&info.reason));
                }
                say!(out, "{line}");
            }
            Ok(0)
        }
        BusinessCommand::Template(TemplateCommand::Send {
            customer,
            template_id,
            params,
        }) => {
            let customer = client.resolve(customer)?;
            let id = TemplateId::from_hex(template_id).ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "{} is not a template id (64 hex digits, as `business template list` \
                     prints it); nothing was sent",
                    visible(template_id)
                ))
            })?;
            let approved = client
                .own_templates()
                .await?
                .into_iter()
                .find(|t| t.template_id == id && t.status == TemplateStatus::Approved)
                .ok_or_else(|| ClientError::TemplateNotApproved(id.to_hex()))?;
            let parameters = parse_params(&approved.template, params).map_err(|e| {
                ClientError::InvalidArgument(format!(
                    "{}; nothing was sent",
                    visible(&e.to_string())
                ))
            })?;
            let sent = client.send_template(customer, &id, parameters).await?;
            say!(out, "{sent}");
            Ok(0)
        }
        BusinessCommand::Consent(BusinessConsentCommand::Request {
            number,
            categories,
            purpose,
        }) => {
            let number = phone_number::normalise(number, cli.region.as_deref())?;
            let mut reference = [0u8; 16];
            rand::fill(&mut reference);
            client
                .request_consent(
                    &number,
                    category_set(categories),
                    purpose_of(*purpose),
                    reference,
                )
                .await?;
            say!(out, "{}", hex::encode(reference));
            note!(
                "asked ({}); if the customer allows, `{c} business consent answers` lists this \
                 reference with the customer's account id (the relay answers the same way \
                 whether or not the number is known)",
                purpose_text(purpose_of(*purpose))
            );
            Ok(0)
        }
        BusinessCommand::Consent(BusinessConsentCommand::Answers) => {
            let answers = client.consent_answers().await?;
            for answer in &answers {
                if json {
                    json::write(
                        out,
                        &Record::ConsentAnswer {
                            reference: hex::encode(answer.reference),
                            customer: answer.customer.to_string(),
                            customer_name: json::name(&client, &answer.customer),
                            time: json::Time::at(answer.answered_at_ms),
                        },
                    )?;
                    continue;
                }
                say!(
                    out,
                    "{}\t{}\t{}",
                    hex::encode(answer.reference),
                    answer.customer,
                    date_time(answer.answered_at_ms)
                );
            }
            if answers.is_empty() {
                note!("no customer has allowed a consent request yet");
            } else if !json {
                note!("name a customer with `{c} contacts add NAME ACCOUNT_ID`");
            }
            Ok(0)
        }
        BusinessCommand::Interactive {
            customer,
            body,
            buttons,
            list_button,
            rows,
        } => {
            let message =
                crate::interactive::from_flags(body, buttons, list_button.as_deref(), rows)?;
            let peer = client.resolve(customer)?;
            let sent = client.send_interactive(peer, message).await?;
            say!(out, "{sent}");
            Ok(0)
        }
        BusinessCommand::Show { business } => {
            let account = match client.resolve(business) {
                Ok(account) => account,
                Err(ClientError::UnknownContact(_)) => {
                    find_account(&mut client, business, cli.region.as_deref()).await?
                }
                Err(e) => return Err(e),
            };
            let view = client.business(account).await?;
            let handle = match client.contact_name(&account)? {
                Some(name) => name,
                None if AccountId::from_hex(business).is_err() => business.clone(),
                None => account.to_string(),
            };
            let shown = Shown {
                name: visible(view.shown_name(&handle)),
                verified: view.verification.is_verified(),
            };
            say!(out, "{}", shown.text());
            say!(out, "account\t{account}");
            match &view.verification {
                comptoir_protocol::business::Verification::Verified { .. } => {
                    say!(out, "verified\tyes, by the operator")
                }
                comptoir_protocol::business::Verification::NotVerified(why) => {
                    say!(out, "verified\tno: {why}")
                }
            }
            if let Some(profile) = &view.profile {
                for (field, value) in [
                    ("about", Some(&profile.about)),
                    ("address", Some(&profile.address)),
                    ("website", profile.website.as_ref()),
                    ("email", profile.email.as_ref()),
                    ("hours", Some(&profile.opening_hours)),
                ] {
                    if let Some(value) = value.filter(|v| !v.is_empty()) {
                        say!(out, "{field}\t{}", visible(value));
                    }
                }
                say!(out, "vertical\t{}", vertical_name(profile.vertical));
            } else {
                say!(out, "profile\tnone published");
            }
            Ok(0)
        }
    };
    client.close().await?;
    result
}

/// The template in `file` (or standard input for `-`), written as JSON;
/// a missing `business` is this account.
fn read_template(client: &Client, file: &std::path::Path) -> Result<Template> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        match crate::account::stdin() {
            Some(bytes) => {
                text = String::from_utf8(bytes).map_err(|_| {
                    ClientError::InvalidArgument(
                        "standard input is not UTF-8 text; nothing was submitted".into(),
                    )
                })?;
            }
            None => {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| ClientError::io("reading the template from standard input", e))?;
            }
        }
    } else {
        text = std::fs::read_to_string(file).map_err(|e| {
            ClientError::io(format!("reading the template file {}", file.display()), e)
        })?;
    }
    let bad = |e: serde_json::Error| {
        ClientError::InvalidArgument(format!(
            "the template file is not a template: {e}; nothing was submitted (see `comptoir \
             business template submit --help`)"
        ))
    };
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    if let Some(object) = value.as_object_mut()
        && !object.contains_key("business")
    {
        object.insert(
            "business".into(),
            serde_json::Value::String(client.account_id().to_string()),
        );
    }
    serde_json::from_value(value).map_err(bad)
}

/// A template's status, as `template list` prints it.
fn status_name(status: TemplateStatus) -> &'static str {
    match status {
        TemplateStatus::Pending => "pending",
        TemplateStatus::Approved => "approved",
        TemplateStatus::Rejected => "rejected",
        TemplateStatus::Revoked => "revoked",
        _ => "unknown",
    }
}

fn purpose_of(purpose: PurposeArg) -> ConsentPurpose {
    match purpose {
        PurposeArg::OrderUpdates => ConsentPurpose::OrderUpdates,
        PurposeArg::DeliveryUpdates => ConsentPurpose::DeliveryUpdates,
        PurposeArg::BoardingPass => ConsentPurpose::BoardingPassAndFlightUpdates,
        PurposeArg::AppointmentReminders => ConsentPurpose::AppointmentReminders,
        PurposeArg::SecurityCodes => ConsentPurpose::AccountSecurityCodes,
    }
}

/// The vertical as `--vertical` takes it.
fn vertical_name(vertical: Vertical) -> String {
    serde_json::to_value(vertical)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', "-")))
        .unwrap_or_else(|| "other".into())
}

/// A total in millionths rounded once, half up, to hundredths (`0.13`).
fn rounded(millionths: u64) -> String {
    let hundredths = comptoir_protocol::round_to_hundredths(millionths);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// Per-category totals in the rate card's category order.
fn categories(
    per_category: &[(u64, u64); comptoir_protocol::bill::BILLED_CATEGORIES.len()],
) -> Vec<json::CategoryTotal> {
    comptoir_protocol::bill::BILLED_CATEGORIES
        .iter()
        .zip(per_category)
        .map(|(c, &(lines, millionths))| json::CategoryTotal {
            category: c.name(),
            lines,
            millionths,
        })
        .collect()
}
