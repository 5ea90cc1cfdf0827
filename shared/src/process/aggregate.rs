use polars::prelude::*;

use super::{BatchStats, CategoryStats, Columns, TagCount, TOP_TAGS};
use crate::error::ResultExt;
use crate::error::{Error, Result};

/// The statistics of a non-empty batch, computed by Polars over a DataFrame built from the
/// columns as they are (the vectors move into Polars; nothing is copied).
pub fn aggregate(cols: Columns) -> Result<BatchStats> {
    let n = cols.values.len();
    if n == 0 {
        return Err(Error::Internal("aggregate called with an empty batch".into()));
    }
    let Columns { ids, timestamps_us, categories, values, tags, category_names, tag_names } = cols;
    let points = DataFrame::new(
        n,
        vec![
            Column::new("id".into(), ids),
            Int64Chunked::from_vec("timestamp".into(), timestamps_us)
                .into_datetime(TimeUnit::Microseconds, None)
                .into_column(),
            Column::new("category".into(), categories),
            Column::new("value".into(), values),
        ],
    )
    .internal("polars")?;
    let tags =
        DataFrame::new(tags.len(), vec![Column::new("tag".into(), tags)]).internal("polars")?;

    let value = || col("value");
    let summary = points.clone().lazy().select([
        len().alias("n"),
        value().mean().alias("mean"),
        value().min().alias("min"),
        value().max().alias("max"),
        value().quantile(lit(0.5), QuantileMethod::Linear).alias("p50"),
        value().quantile(lit(0.95), QuantileMethod::Linear).alias("p95"),
    ]);
    // The mean is written as sum / count on purpose: Polars cannot pre-aggregate that, so it
    // groups row indices and sums each group in row order. Its partitioned path (taken for a
    // plain `mean()`) adds partial sums in whatever order threads finish, and identical requests
    // would then differ in the last bits. This way the answer is the same on 1 or 8 threads.
    let by_category = points
        .lazy()
        .group_by([col("category")])
        .agg([
            len().alias("count"),
            (value().sum() / len().cast(DataType::Float64)).alias("mean"),
            value().min().alias("min"),
            value().max().alias("max"),
        ])
        .sort(["category"], SortMultipleOptions::default());
    let by_tag = tags
        .lazy()
        .group_by([col("tag")])
        .agg([len().alias("count")])
        .sort_by_exprs(
            [col("count"), col("tag")],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .limit(TOP_TAGS as IdxSize);
    let frames = LazyFrame::collect_all_with_engine(
        vec![summary.logical_plan, by_category.logical_plan, by_tag.logical_plan],
        Engine::InMemory,
        OptFlags::default(),
    )
    .internal("polars")?;
    let [summary, by_category, by_tag]: [DataFrame; 3] = frames
        .try_into()
        .map_err(|_| Error::Internal("polars: expected three result frames".into()))?;

    let f64_at = |df: &DataFrame, name: &str, i: usize| -> Result<f64> {
        df.column(name)
            .and_then(|c| c.get(i))
            .internal("polars")?
            .extract::<f64>()
            .ok_or_else(|| Error::Internal(format!("polars: {name}[{i}] is null")))
    };
    let u64_at = |df: &DataFrame, name: &str, i: usize| -> Result<u64> {
        df.column(name)
            .and_then(|c| c.get(i))
            .internal("polars")?
            .extract::<u64>()
            .ok_or_else(|| Error::Internal(format!("polars: {name}[{i}] is null")))
    };
    let name_of = |names: &[String], code: u64| -> Result<String> {
        names
            .get(code as usize)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("code {code} has no name")))
    };
    let by_category = (0..by_category.height())
        .map(|i| {
            Ok(CategoryStats {
                category: name_of(&category_names, u64_at(&by_category, "category", i)?)?,
                count: u64_at(&by_category, "count", i)?,
                mean: f64_at(&by_category, "mean", i)?,
                min: f64_at(&by_category, "min", i)?,
                max: f64_at(&by_category, "max", i)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let by_tag = (0..by_tag.height())
        .map(|i| {
            Ok(TagCount {
                tag: name_of(&tag_names, u64_at(&by_tag, "tag", i)?)?,
                count: u64_at(&by_tag, "count", i)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(BatchStats {
        total_records: u64_at(&summary, "n", 0)?,
        mean_value: f64_at(&summary, "mean", 0)?,
        min_value: f64_at(&summary, "min", 0)?,
        max_value: f64_at(&summary, "max", 0)?,
        p50_value: f64_at(&summary, "p50", 0)?,
        p95_value: f64_at(&summary, "p95", 0)?,
        by_category,
        by_tag,
    })
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------
