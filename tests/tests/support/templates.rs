//! Approved templates for tests that send them: one support template per
//! category for a business, submitted over its connection and approved
//! through the admin API, and its id.

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{TemplateInstance, TemplateParameter, template_parameter};
use comptoir_protocol::proto::wire::{self, Category, client_frame, server_frame};
use comptoir_protocol::template::{Placeholder, PlaceholderKind, Template, TemplateCategory};

use super::{Client, TestRelay};

/// The support template of `category` for `business`: a utility order
/// update, an authentication code or a marketing offer.
pub fn support_template(business: AccountId, category: Category) -> Template {
    let (name, category, body, kind) = match category {
        Category::Utility => (
            "order_update",
            TemplateCategory::Utility,
            "Your order {{order}} has shipped.",
            PlaceholderKind::Text,
        ),
        Category::Authentication => (
            "login_code",
            TemplateCategory::Authentication,
            "Your code is {{order}}.",
            PlaceholderKind::Number,
        ),
        Category::Marketing => (
            "winter_offer",
            TemplateCategory::Marketing,
            "Order {{order}} again this winter for less.",
            PlaceholderKind::Text,
        ),
        other => panic!("{other:?} is not a template category"),
    };
    Template {
        business,
        name: name.into(),
        language: "en_GB".into(),
        category,
        header: None,
        body: body.into(),
        footer: None,
        placeholders: vec![Placeholder {
            name: "order".into(),
            kind,
        }],
        buttons: Vec::new(),
    }
}

/// The id (hex) of [`support_template`].
pub fn id_for(business: AccountId, category: Category) -> String {
    support_template(business, category)
        .template_id()
        .expect("a valid template")
        .to_hex()
}

/// An instance of [`support_template`] of `category` for `business` with
/// `order` as its value (a number for authentication, whose placeholder
/// is one).
pub fn support_instance(business: AccountId, category: Category, order: &str) -> TemplateInstance {
    let value = match category {
        Category::Authentication => {
            template_parameter::Value::Number(order.parse().expect("a numeric code"))
        }
        _ => template_parameter::Value::Text(order.into()),
    };
    TemplateInstance {
        template_id: id_for(business, category),
        parameters: vec![TemplateParameter {
            name: "order".into(),
            value: Some(value),
        }],
    }
}

/// Submit `template` over `conn`; the relay's answer.
pub async fn submit(conn: &mut Client, template: &Template) -> server_frame::Body {
    conn.request(client_frame::Body::SubmitTemplate(wire::SubmitTemplate {
        template_json: serde_json::to_string(template).expect("template JSON"),
    }))
    .await
}

impl TestRelay {
    /// Submit and approve the three support templates of the business
    /// logged in on `conn`.
    pub async fn approve_support_templates(&self, conn: &mut Client) {
        let business = conn.account.expect("a logged-in business connection");
        let admin = self.admin_client();
        for category in [
            Category::Utility,
            Category::Authentication,
            Category::Marketing,
        ] {
            let template = support_template(business, category);
            match submit(conn, &template).await {
                server_frame::Body::TemplateSubmitted(s) => {
                    assert_eq!(s.template_id, id_for(business, category));
                }
                other => panic!("submit: {other:?}"),
            }
            admin
                .approve_template(&id_for(business, category))
                .await
                .expect("approve");
        }
    }
}
