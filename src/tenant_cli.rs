//! `codeops tenant create` and `codeops tenant appoint-owner`: the
//! operator's ways to add a tenant with its first owner, and to give a
//! tenant nobody can manage a new owner, without going through gRPC.

use clap::Args;
use codeops_identity::Hasher;
use codeops_identity::tenants::{NewTenant, appoint_owner, create_tenant, find_user};
use codeops_platform::Db;
use codeops_tenant::RequestMeta;

use crate::config::DbArgs;

#[derive(Args, Clone, Debug)]
pub struct CreateTenantArgs {
    #[arg(long)]
    pub name: String,
    /// Lowercase letters, digits and dashes; users log in with it.
    #[arg(long)]
    pub slug: String,
    #[arg(long)]
    pub owner_email: String,
    #[arg(long, default_value = "Owner")]
    pub owner_first_name: String,
    #[arg(long, default_value = "Account")]
    pub owner_last_name: String,
    /// Initial owner password; generated and printed when omitted.
    #[arg(long, env = "CODEOPS_OWNER_PASSWORD", hide_env_values = true)]
    pub owner_password: Option<String>,
    #[arg(long, env = "CODEOPS_BCRYPT_COST", default_value_t = 12, value_parser = crate::config::whole::<u32, 4, 16>)]
    pub bcrypt_cost: u32,
}

#[derive(Args, Clone, Debug)]
pub struct AppointOwnerArgs {
    /// The tenant's slug.
    #[arg(long)]
    pub tenant_slug: String,
    /// E-mail address of an active user of the tenant.
    #[arg(long)]
    pub email: String,
}

/// What the audit trail records of a CLI run.
fn cli_meta(command: &str) -> RequestMeta {
    RequestMeta {
        request_id: format!("cli-{}", uuid::Uuid::new_v4()),
        peer_ip: None,
        user_agent: Some(format!("codeops tenant {command}")),
        deadline: None,
    }
}

/// The same code path as `TenantService.AppointOwner`, audited as
/// ROLE_ASSIGNED by the operator.
pub async fn appoint(db: DbArgs, args: AppointOwnerArgs) -> anyhow::Result<()> {
    let url = db.url()?;
    let pool = Db::connect(&db.options(url), codeops_platform::ServiceRole::Identity).await?;
    let meta = cli_meta("appoint-owner");
    let result = async {
        let (tenant_id, user_id) = find_user(&pool, &args.tenant_slug, &args.email, &meta).await?;
        appoint_owner(&pool, tenant_id, user_id, &meta).await
    }
    .await;
    pool.close().await;
    let owner = result.map_err(|e| anyhow::anyhow!(tonic::Status::from(e).message().to_owned()))?;
    println!(
        "{} ({}) is now an OWNER of {}",
        owner.email, owner.id, args.tenant_slug
    );
    Ok(())
}

pub async fn create(db: DbArgs, args: CreateTenantArgs) -> anyhow::Result<()> {
    let url = db.url()?;
    let pool = Db::connect(&db.options(url), codeops_platform::ServiceRole::Identity).await?;
    let meta = cli_meta("create");
    let created = create_tenant(
        &pool,
        NewTenant {
            name: args.name,
            slug: args.slug,
            logo_url: String::new(),
            owner_email: args.owner_email,
            owner_first_name: args.owner_first_name,
            owner_last_name: args.owner_last_name,
            owner_password: args.owner_password.unwrap_or_default(),
            // A command line is not retried by a mesh.
            request_key: None,
        },
        &Hasher::new(args.bcrypt_cost, 1),
        &meta,
    )
    .await
    .map_err(|e| anyhow::anyhow!(tonic::Status::from(e).message().to_owned()))?;
    pool.close().await;
    println!(
        "tenant {} ({}) created",
        created.tenant.id, created.tenant.slug
    );
    println!("owner {} ({})", created.owner.id, created.owner.email);
    if let Some(password) = created.generated_password {
        println!("owner password (shown once): {password}");
    }
    Ok(())
}
