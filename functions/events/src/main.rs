#[tokio::main]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let mut cfg = quiver::Config::from_env()?;
    quiver::secrets::resolve_database_url(&mut cfg).await?;
    quiver::lambda::run(events::routes(events::Events::new(&cfg)?)).await
}
