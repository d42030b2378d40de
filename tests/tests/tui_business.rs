//! The TUI's business and customer actions over a real relay, through the
//! same functions `comptoir tui` runs (`tui::reload`, `tui::perform`) with
//! real clients: a business sees a customer's window closed, sends an
//! approved template from the picker's action, sees the window open once
//! the customer answers with a quick reply picked on the customer's
//! screen, with 24 hours left (issue 13 items 9, 10).

use crate::support;

use std::time::Duration;

use comptoir_cli::tui::app::{Action, App, Pick};
use comptoir_cli::tui::{perform, reload};
use comptoir_client::Event;
use comptoir_client::rule_checks::WINDOW_MS;
use comptoir_protocol::ConsentCategories;
use comptoir_protocol::template::{
    Button, Placeholder, PlaceholderKind, Template, TemplateCategory,
};
use support::client::{registered, registered_business, wait_for};
use support::*;

#[tokio::test]
async fn a_business_sends_a_template_from_the_picker_and_sees_the_window_open() {
    let relay = start_relay().await;
    let (customer_dir, shop_dir) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut customer = registered(&relay, customer_dir.path(), "customer pass").await;
    let mut shop = registered_business(&relay, shop_dir.path(), "business pass").await;
    let (customer_id, shop_id) = (customer.account_id(), shop.account_id());
    customer
        .grant_consent(
            shop_id,
            ConsentCategories::UTILITY,
            Duration::from_secs(30 * 24 * 3600),
        )
        .await
        .expect("consent");
    let template = Template {
        business: shop_id,
        name: "gate_change".into(),
        language: "en_GB".into(),
        category: TemplateCategory::Utility,
        header: None,
        body: "Your gate is now {{gate}}.".into(),
        footer: None,
        placeholders: vec![Placeholder {
            name: "gate".into(),
            kind: PlaceholderKind::Number,
        }],
        buttons: vec![Button::QuickReply {
            text: "Thanks".into(),
        }],
    };
    let (id, _) = shop.submit_template(&template).await.expect("submit");
    relay
        .admin_client()
        .approve_template(&id.to_hex())
        .await
        .expect("approve");
    shop.add_contact("carol", customer_id).expect("contact");

    // The business's screen: the customer never wrote, the window is
    // closed; the picker offers the approved template.
    let mut app = App::new(Vec::new());
    app.templates = shop
        .own_templates()
        .await
        .expect("templates")
        .into_iter()
        .map(|t| comptoir_cli::tui::app::PickableTemplate {
            id: t.template_id,
            template: t.template,
        })
        .collect();
    reload(&mut shop, &mut app).await.expect("reload");
    let window = app.conversations[0]
        .window
        .expect("a business sees the window");
    assert_eq!(window.opened_at_ms, None);
    assert!(app.window_closed());

    // A value that does not fit: refused, nothing sent.
    let send = |gate: &str| Action::SendTemplate {
        peer: customer_id,
        id,
        params: vec![format!("gate={gate}")],
    };
    perform(&mut shop, &mut app, send("twelve"))
        .await
        .expect("perform");
    assert!(app.status.starts_with("⚠ not sent"), "{}", app.status);
    assert!(shop.history(&customer_id).expect("history").is_empty());
    perform(&mut shop, &mut app, send("12"))
        .await
        .expect("perform");
    assert_eq!(app.status, "template gate_change sent");

    // The customer's screen offers the quick reply; picking it sends it.
    let message = wait_for(&mut customer, |e| match e {
        Event::Template { id, .. } => Some(*id),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
    let mut theirs = App::new(Vec::new());
    reload(&mut customer, &mut theirs).await.expect("reload");
    let conversation = &theirs.conversations[0];
    assert_eq!(conversation.window, None, "a customer sees no window");
    let choices = conversation.choices.clone().expect("choices");
    assert_eq!(choices.message, message);
    assert_eq!(
        choices.options,
        vec![("[1] Thanks".to_string(), Pick::QuickReply(0))]
    );
    perform(
        &mut customer,
        &mut theirs,
        Action::Choose {
            peer: shop_id,
            message,
            pick: Pick::QuickReply(0),
        },
    )
    .await
    .expect("perform");
    assert_eq!(theirs.status, "choice sent");

    // The quick reply opened the window: about 24 hours left.
    wait_for(&mut shop, |e| {
        matches!(e, Event::QuickReply { .. }).then_some(())
    })
    .await;
    reload(&mut shop, &mut app).await.expect("reload");
    assert!(!app.window_closed());
    let left = app.conversations[0]
        .window
        .and_then(|w| w.time_left_ms(app.now_ms))
        .expect("open");
    assert!(left > WINDOW_MS - 60_000 && left <= WINDOW_MS, "{left}");
}
