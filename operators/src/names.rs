//! The texts behind the customer and dimension fingerprints (`om_model::fingerprint`).
//!
//! Readers send a [`NameRecord`] the first time they route by a fingerprint; the worker
//! that owns the state keeps them in [`Names`] to write table rows. Both sides check
//! that one fingerprint never stands for two texts, so a hash collision stops the job
//! with an error instead of merging two customers' usage.

use om_model::fingerprint;
use rustc_hash::FxHashMap;

/// Two different texts with one fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "fingerprint collision: {first} and {second} share fingerprint {fingerprint:#018x}; \
     OpenMonetize cannot keep them apart (please report this)"
)]
pub struct Collision {
    /// The fingerprint.
    pub fingerprint: u64,
    /// The text registered first.
    pub first: String,
    /// The other text.
    pub second: String,
}

/// The text behind one fingerprint, on its way to the worker that needs it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NameRecord {
    /// A customer, sent to the worker that owns it.
    Customer {
        /// `fingerprint::customer(tenant_id, customer_id)`.
        fingerprint: u64,
        /// Tenant.
        tenant_id: String,
        /// Customer.
        customer_id: String,
    },
    /// A dimensions text, sent to every worker (`target` says which copy this is).
    Dimensions {
        /// `fingerprint::dimensions(text)`.
        fingerprint: u64,
        /// Canonical dimensions JSON.
        text: String,
        /// The worker this copy goes to.
        target: u32,
    },
}

impl NameRecord {
    /// The routing hash: the customer's fingerprint, or the target worker.
    pub fn route(&self) -> u64 {
        match self {
            NameRecord::Customer { fingerprint, .. } => *fingerprint,
            NameRecord::Dimensions { target, .. } => *target as u64,
        }
    }
}

/// Fingerprint -> text maps for customers and dimensions.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Names {
    customers: FxHashMap<u64, (Box<str>, Box<str>)>,
    dimensions: FxHashMap<u64, Box<str>>,
}

fn customer_text(tenant_id: &str, customer_id: &str) -> String {
    format!("customer {customer_id:?} of tenant {tenant_id:?}")
}

impl Names {
    /// Records a name; an existing fingerprint must carry the same text.
    pub fn register(&mut self, record: NameRecord) -> Result<(), Collision> {
        match record {
            NameRecord::Customer {
                fingerprint,
                tenant_id,
                customer_id,
            } => self
                .customer(fingerprint, &tenant_id, &customer_id)
                .map(|_| ()),
            NameRecord::Dimensions {
                fingerprint, text, ..
            } => self.dimension(fingerprint, &text).map(|_| ()),
        }
    }

    /// Records a customer; true when it is new here.
    pub fn customer(
        &mut self,
        fp: u64,
        tenant_id: &str,
        customer_id: &str,
    ) -> Result<bool, Collision> {
        match self.customers.get(&fp) {
            Some((t, c)) if &**t == tenant_id && &**c == customer_id => Ok(false),
            Some((t, c)) => Err(Collision {
                fingerprint: fp,
                first: customer_text(t, c),
                second: customer_text(tenant_id, customer_id),
            }),
            None => {
                self.customers
                    .insert(fp, (tenant_id.into(), customer_id.into()));
                Ok(true)
            }
        }
    }

    /// Records a dimensions text; true when it is new here.
    pub fn dimension(&mut self, fp: u64, text: &str) -> Result<bool, Collision> {
        match self.dimensions.get(&fp) {
            Some(t) if &**t == text => Ok(false),
            Some(t) => Err(Collision {
                fingerprint: fp,
                first: format!("dimensions {t}"),
                second: format!("dimensions {text}"),
            }),
            None => {
                self.dimensions.insert(fp, text.into());
                Ok(true)
            }
        }
    }

    /// (tenant, customer) of a fingerprint.
    pub fn customer_of(&self, fp: u64) -> Option<(&str, &str)> {
        self.customers.get(&fp).map(|(t, c)| (&**t, &**c))
    }

    /// Dimensions text of a fingerprint.
    pub fn dimensions_of(&self, fp: u64) -> Option<&str> {
        self.dimensions.get(&fp).map(|t| &**t)
    }
}

/// The reader's side: fingerprints the texts of decoded events, checks them against what
/// it has seen, and says which names to send on.
#[derive(Debug, Default)]
pub struct NameCache {
    seen: Names,
}

impl NameCache {
    /// The customer's fingerprint, and its name record when this reader has not sent it.
    pub fn customer(
        &mut self,
        tenant_id: &str,
        customer_id: &str,
    ) -> Result<(u64, Option<NameRecord>), Collision> {
        let fp = fingerprint::customer(tenant_id, customer_id);
        let new = self.seen.customer(fp, tenant_id, customer_id)?;
        Ok((
            fp,
            new.then(|| NameRecord::Customer {
                fingerprint: fp,
                tenant_id: tenant_id.to_string(),
                customer_id: customer_id.to_string(),
            }),
        ))
    }

    /// The dimensions' fingerprint, and one name record per worker when this reader has
    /// not sent it.
    pub fn dimensions(
        &mut self,
        text: &str,
        workers: u32,
        out: &mut Vec<NameRecord>,
    ) -> Result<u64, Collision> {
        let fp = fingerprint::dimensions(text);
        if self.seen.dimension(fp, text)? {
            out.extend((0..workers).map(|target| NameRecord::Dimensions {
                fingerprint: fp,
                text: text.to_string(),
                target,
            }));
        }
        Ok(fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sent_once_and_collisions_are_caught() {
        let mut cache = NameCache::default();
        let (fp, first) = cache.customer("t", "c").unwrap();
        assert!(first.is_some());
        assert_eq!(cache.customer("t", "c").unwrap(), (fp, None));
        let mut out = Vec::new();
        cache.dimensions("{}", 2, &mut out).unwrap();
        cache.dimensions("{}", 2, &mut out).unwrap();
        assert_eq!(out.len(), 2);

        let mut names = Names::default();
        names.register(first.unwrap()).unwrap();
        assert_eq!(names.customer_of(fp), Some(("t", "c")));
        let forged = NameRecord::Customer {
            fingerprint: fp,
            tenant_id: "t".into(),
            customer_id: "other".into(),
        };
        let err = names.register(forged).unwrap_err();
        assert!(err.to_string().contains("\"other\""), "{err}");
    }
}
