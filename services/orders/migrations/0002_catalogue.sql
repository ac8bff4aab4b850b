-- A small catalogue to order from. Stock is deep so a long load test does not
-- run out; the limited edition runs out on purpose, to show a refused order.
INSERT INTO products (sku, name, price_cents, stock) VALUES
    ('COFFEE-BEANS-1KG', 'Espresso beans, 1 kg',       2490, 1000000),
    ('GRINDER-BURR',     'Burr grinder',              12900, 1000000),
    ('KETTLE-GOOSENECK', 'Gooseneck kettle',            5900, 1000000),
    ('FILTER-PAPER-100', 'Paper filters, pack of 100',   690, 1000000),
    ('MUG-CERAMIC',      'Ceramic mug',                 1490, 1000000),
    ('SCALE-DIGITAL',    'Digital scale',               3490, 1000000),
    ('DRIPPER-V60',      'Cone dripper',                2290, 1000000),
    ('LIMITED-ROAST',    'Limited edition roast, 250 g', 1990,     5)
ON CONFLICT (sku) DO NOTHING;
