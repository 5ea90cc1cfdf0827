#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = search::Search::new(&quiver::lambda::config().await?).await?;
    quiver::lambda::warm("index", state.warm()).await;
    quiver::lambda::run(search::routes(state)).await
}
