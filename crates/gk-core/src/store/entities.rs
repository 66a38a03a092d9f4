//! The platform's tables, as sea-orm entities.
#![allow(unreachable_pub)] // the entity macros generate public items

/// `sysconfig_default`: settings as shipped.
pub(crate) mod sysconfig_default {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sysconfig_default")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique, column_type = "String(StringLen::N(250))")]
        pub name: String,
        #[sea_orm(column_type = "Text")]
        pub value: String,
        pub valid: i32,
        pub create_time: DateTimeUtc,
        #[sea_orm(column_type = "String(StringLen::N(200))")]
        pub create_by: String,
        pub change_time: DateTimeUtc,
        #[sea_orm(column_type = "String(StringLen::N(200))")]
        pub change_by: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// `sysconfig_modified`: settings an admin changed; they win over the defaults.
pub(crate) mod sysconfig_modified {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sysconfig_modified")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique, column_type = "String(StringLen::N(250))")]
        pub name: String,
        #[sea_orm(column_type = "Text")]
        pub value: String,
        pub valid: i32,
        pub create_time: DateTimeUtc,
        #[sea_orm(column_type = "String(StringLen::N(200))")]
        pub create_by: String,
        pub change_time: DateTimeUtc,
        #[sea_orm(column_type = "String(StringLen::N(200))")]
        pub change_by: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// `gk_email_outbox`: mail plugins sent while no SMTP server is configured.
pub(crate) mod email_outbox {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "gk_email_outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(column_type = "String(StringLen::N(64))")]
        pub plugin: String,
        #[sea_orm(column_type = "String(StringLen::N(320))")]
        pub recipient: String,
        #[sea_orm(column_type = "Text")]
        pub subject: String,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub html: bool,
        pub created: DateTimeUtc,
    }

    impl ActiveModelBehavior for ActiveModel {}
}
