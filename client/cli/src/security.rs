//! `weir user create | list | delete` and `weir acl add | list | remove`: users (a token each,
//! printed once at creation) and the ACLs brokers enforce with `security.authorization = true`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use weir_client::admin::{Acl, AclFilter, AclOperation, AclResource};

use crate::connect;
use crate::topic::table;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user and print its token (shown only now: store it)
    Create {
        /// The user name (letters, digits, '.', '_', '-')
        name: String,
    },
    /// List users (no secrets)
    List,
    /// Delete a user: its token stops working at once
    Delete {
        /// The user name
        name: String,
    },
}

/// Which resource an ACL names: exactly one of --topic, --group, --cluster.
#[derive(Args)]
#[group(required = false, multiple = false)]
pub struct ResourceArgs {
    /// A topic (`*`: every topic)
    #[arg(long, value_name = "NAME")]
    topic: Option<String>,
    /// A consumer group (`*`: every group)
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// The cluster (broker registration, replication, users, ACLs, reassignments)
    #[arg(long)]
    cluster: bool,
}

#[derive(Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, forbid) a principal an operation on a resource
    Add {
        /// User:NAME (or NAME); User:ANONYMOUS for clients without a token
        #[arg(long, value_name = "PRINCIPAL")]
        principal: String,
        /// read, write, create, delete, describe, alter or all
        #[arg(long)]
        operation: AclOperation,
        #[command(flatten)]
        resource: ResourceArgs,
        /// The name is a prefix: every topic or group starting with it
        #[arg(long)]
        prefix: bool,
        /// A deny entry (wins over every allow)
        #[arg(long)]
        deny: bool,
    },
    /// List ACL entries (filters: every one given must match)
    List(FilterArgs),
    /// Remove the ACL entries matching the filters (at least one filter, or --all)
    Remove {
        #[command(flatten)]
        filter: FilterArgs,
        /// Remove every entry
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
pub struct FilterArgs {
    /// Only this principal's entries
    #[arg(long, value_name = "PRINCIPAL")]
    principal: Option<String>,
    /// Only entries for this operation
    #[arg(long)]
    operation: Option<AclOperation>,
    #[command(flatten)]
    resource: ResourceArgs,
    /// Only prefix entries
    #[arg(long)]
    prefix: bool,
    /// Only deny entries
    #[arg(long)]
    deny: bool,
}

impl FilterArgs {
    fn filter(&self) -> AclFilter {
        let (resource_type, name) = match (&self.resource.topic, &self.resource.group) {
            (Some(t), _) => (Some("topic"), Some(t.clone())),
            (_, Some(g)) => (Some("group"), Some(g.clone())),
            _ if self.resource.cluster => (Some("cluster"), None),
            _ => (None, None),
        };
        AclFilter {
            principal: self.principal.clone(),
            operation: self.operation,
            resource_type: resource_type.map(str::to_owned),
            name,
            prefix: self.prefix.then_some(true),
            deny: self.deny.then_some(true),
        }
    }

    fn is_empty(&self) -> bool {
        self.filter() == AclFilter::default()
    }
}

pub async fn user(broker: &str, command: UserCommand) -> anyhow::Result<ExitCode> {
    let admin = connect(broker).await?.admin();
    match command {
        UserCommand::Create { name } => {
            let created = admin.create_user(&name).await?;
            eprintln!(
                "created user {}; its token is shown only now (pass it with --token or WEIR_TOKEN):",
                created.name
            );
            println!("{}", created.token);
        }
        UserCommand::List => {
            let mut rows = vec![vec!["USER".to_owned(), "CREATED".to_owned()]];
            for u in admin.list_users().await? {
                rows.push(vec![u.name, crate::time::format_rfc3339_ms(u.created_ms)]);
            }
            print!("{}", table(&rows));
        }
        UserCommand::Delete { name } => {
            admin.delete_user(&name).await?;
            eprintln!("deleted user {name}; its token no longer works");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rows(acls: &[Acl]) -> String {
    let mut rows = vec![
        [
            "PRINCIPAL",
            "PERMISSION",
            "OPERATION",
            "RESOURCE",
            "NAME",
            "PATTERN",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for a in acls {
        rows.push(vec![
            a.principal.clone(),
            if a.deny { "deny" } else { "allow" }.to_owned(),
            a.operation.to_string(),
            a.resource.type_name().to_owned(),
            a.resource.name().to_owned(),
            if a.resource.is_prefix() {
                "prefix"
            } else {
                "literal"
            }
            .to_owned(),
        ]);
    }
    table(&rows)
}

pub async fn acl(broker: &str, command: AclCommand) -> anyhow::Result<ExitCode> {
    let admin = connect(broker).await?.admin();
    match command {
        AclCommand::Add {
            principal,
            operation,
            resource,
            prefix,
            deny,
        } => {
            let resource = match (resource.topic, resource.group, resource.cluster) {
                (Some(t), _, _) if prefix => AclResource::TopicPrefix(t),
                (Some(t), _, _) => AclResource::Topic(t),
                (_, Some(g), _) if prefix => AclResource::GroupPrefix(g),
                (_, Some(g), _) => AclResource::Group(g),
                (_, _, true) if !prefix => AclResource::Cluster,
                (_, _, true) => anyhow::bail!("--prefix is for --topic or --group, not --cluster"),
                _ => anyhow::bail!("name the resource: --topic NAME, --group NAME or --cluster"),
            };
            let acl = Acl {
                principal,
                operation,
                resource,
                deny,
            };
            admin.create_acls(std::slice::from_ref(&acl)).await?;
            eprintln!("added: {acl}");
        }
        AclCommand::List(filter) => {
            let acls = admin.describe_acls(&filter.filter()).await?;
            print!("{}", rows(&acls));
        }
        AclCommand::Remove { filter, all } => {
            if filter.is_empty() && !all {
                anyhow::bail!(
                    "no filter given: name what to remove (--principal, --operation, --topic, ...) or pass --all"
                );
            }
            let deleted = admin.delete_acls(&filter.filter()).await?;
            eprintln!(
                "removed {} entr{}",
                deleted.len(),
                if deleted.len() == 1 { "y" } else { "ies" }
            );
            print!("{}", rows(&deleted));
        }
    }
    Ok(ExitCode::SUCCESS)
}
