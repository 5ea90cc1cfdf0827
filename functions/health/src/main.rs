#[tokio::main]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = health::Health::new(quiver::Config::from_env()?).await?;
    quiver::lambda::run(health::routes(state)).await
}
