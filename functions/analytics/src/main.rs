#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = analytics::Analytics::new(&quiver::lambda::config().await?).await?;
    quiver::lambda::warm("snapshot", state.warm()).await;
    quiver::lambda::run(analytics::routes(state)).await
}
