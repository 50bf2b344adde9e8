//! The one filter in front of every layer: `RUST_LOG` (an `EnvFilter`) decides which log
//! lines are made, and while tracing is on the service's own spans (target `scheduler`, INFO
//! and above) are made whatever it says. One global filter rather than a filter per layer,
//! because per-layer filtering loses spans now and then when one layer is an
//! OpenTelemetry layer.

use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber, level_filters::LevelFilter, span};
use tracing_subscriber::{EnvFilter, Layer, layer::Context, registry::LookupSpan};

/// `RUST_LOG`'s filter, admitting the service's spans too when `spans` is set.
pub(super) struct Admit {
    pub(super) env: EnvFilter,
    pub(super) spans: bool,
}

impl Admit {
    fn traced(&self, meta: &Metadata<'_>) -> bool {
        self.spans
            && meta.is_span()
            && *meta.level() <= tracing::Level::INFO
            && (meta.target() == "scheduler" || meta.target().starts_with("scheduler::"))
    }
}

impl<S> Layer<S> for Admit
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.traced(meta) {
            return Interest::always();
        }
        <EnvFilter as Layer<S>>::register_callsite(&self.env, meta)
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.traced(meta) || <EnvFilter as Layer<S>>::enabled(&self.env, meta, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let env = <EnvFilter as Layer<S>>::max_level_hint(&self.env);
        if self.spans {
            env.map(|level| level.max(LevelFilter::INFO))
        } else {
            env
        }
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.env.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.env.on_record(id, values, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.env.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.env.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.env.on_close(id, ctx);
    }
}
