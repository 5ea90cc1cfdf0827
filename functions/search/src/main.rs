#[tokio::main]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = search::Search::new(&quiver::Config::from_env()?).await?;
    quiver::lambda::warm("index", state.warm()).await;
    quiver::lambda::run(search::routes(state)).await
}
