//! What tracker shows in a browser: [`svg`] charts rendered by tracker itself and the
//! self-contained report [`page`], both reused by the dashboard.

pub mod page;
pub mod svg;
