#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = pg_benchmark::PgBenchmark::new(&quiver::lambda::config().await?)?;
    quiver::lambda::run(pg_benchmark::routes(state)).await
}
