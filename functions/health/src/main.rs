#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let cfg = quiver::lambda::config().await?;
    quiver::lambda::run(health::routes(health::Health::new(cfg).await?)).await
}
